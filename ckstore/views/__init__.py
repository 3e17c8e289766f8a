"""What the pictures show, as data: history lanes, metric series, per-layer change maps and storage shares.

Both faces that draw — the web view (`ckstore ui`) and `ckstore plot` — take their data from here, so a curve in
the browser and the same curve in a PNG can never disagree. Everything here reads through `ckstore.Repo` and
returns JSON-ready dicts.
"""
