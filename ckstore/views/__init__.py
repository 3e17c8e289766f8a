"""What the pictures show, as data: history lanes, metric series, per-layer change maps and storage shares.

Both faces that draw — the web view (`ckstore ui`) and `ckstore plot` — take their data from here, so a curve in
the browser and the same curve in a PNG can never disagree. The data modules (history, lanes, metrics, heat) read
through `ckstore.Repo` and return JSON-ready dicts; `charts` draws them as matplotlib figures and `draw` writes
those as files.
"""
