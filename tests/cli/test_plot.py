"""`ckstore plot`: metric curves, change maps and the commit graph as real PNG, SVG and PDF files, read back.

Each picture is checked as a reader would: a PNG by its header (size) and pixels (not blank), an SVG by parsing it
and finding the elements drawn (matplotlib writes an artist's gid as its id: `series-BRANCH`, `cell-TENSOR`,
`commit-ID`, `ref-KIND-NAME`) and the colours they were filled with.
"""

from __future__ import annotations

import colorsys
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ckstore import Repo
from ckstore.cli import app
from ckstore.views.charts import ADDED, REMOVED, RESHAPED, UNCHANGED
import test_cli
from test_cli import Run

ck_main = test_cli.ck_main  # the fixture, used here by name: the console-script entry point in-process

SVG = "{http://www.w3.org/2000/svg}"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory, with no repository chosen by the environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("CKSTORE_DIR", "CKSTORE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@ci")


# ------------------------------------------------------------------------------------------------------------ helpers


def ck(*args: object) -> str:
    """`ckstore ARGS...` in-process; it must succeed. Returns its standard output."""
    result = runner.invoke(app, [str(a) for a in args], prog_name="ckstore")
    assert result.exit_code == 0, f"{args}: {result.output}{result.exception!r}"
    return result.stdout


def ckj(*args: object) -> dict:
    return json.loads(ck(*args, "--json"))


def failed(r: Run, code: int, *needles: str) -> None:
    """A clean failure: the exit code, an `error:` line (and at most a hint), no traceback, nothing on stdout."""
    assert r.code == code, r
    assert "Traceback" not in r.err + r.out, r.err
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) <= 2, r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)
    assert r.out == ""


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def assert_not_blank(path: Path) -> None:
    """Decodes, with many distinct colours and a fair share of pixels that are not the white background."""
    from matplotlib.image import imread
    px = imread(path)[..., :3]
    colours = np.unique((px * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 30, len(colours)
    assert (px.min(axis=2) < 0.9).mean() > 0.01


def svg_ids(path: Path) -> dict[str, ET.Element]:
    """Every element with an id in an SVG (which must parse)."""
    return {e.get("id"): e for e in ET.parse(path).getroot().iter() if e.get("id")}


def fill_of(group: ET.Element) -> str:
    """The fill colour of the (first) path in a drawn group."""
    path = next(group.iter(f"{SVG}path"))
    m = re.search(r"fill:\s*(#[0-9a-f]{6})", path.get("style", ""))
    assert m, path.attrib
    return m[1]


def no_pictures(where: Path) -> list[str]:
    """What is in a directory besides the repository: pictures, temporary files."""
    return sorted(p.name for p in where.iterdir() if p.name != ".ckstore")


# --------------------------------------------------------------------------------------------------------- the repo


def layers(scale: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Four numbered blocks of three tensors, an embedding and a bias; `scale` multiplies some tensors."""
    rng = np.random.default_rng(0)
    out = {f"blocks.{i}.{s}": rng.standard_normal((8, 8)).astype(np.float32)
           for i in range(4) for s in ("attn.weight", "mlp.weight", "norm.scale")}
    out["embed.weight"] = rng.standard_normal((16, 8)).astype(np.float32)
    out["head.bias"] = np.arange(4, dtype=np.float32)
    for name, k in (scale or {}).items():
        out[name] = out[name] * np.float32(k)
    return out


@pytest.fixture
def series(tmp_path: Path) -> dict[str, str]:
    """main: c1 -> c2 (tag v1) -> c3 (alias champion) -> a merge of lora; lora: c2 -> c4 -> c5. Every commit has a
    step and val_loss (the merge takes c3's); c2, c3 and c5 have an eval note. Returns the commits' ids by name."""
    ids = {}
    with Repo.init(tmp_path / "r") as repo:
        ids["c1"] = repo.commit(layers(), "c1", step=100, metrics={"val_loss": 1.0}, capture_env=False).id
        ids["c2"] = repo.commit(layers({"blocks.0.attn.weight": 1.5}), "c2", step=200, metrics={"val_loss": 0.8},
                                tag="v1", capture_env=False).id
        three = layers({"blocks.0.attn.weight": 1.5, "blocks.3.attn.weight": 1.01, "blocks.3.mlp.weight": 3.0})
        ids["c3"] = repo.commit(three, "c3", step=300, metrics={"val_loss": 0.6}, capture_env=False).id
        repo.alias_set("champion", "HEAD", "best so far")
        repo.branch("lora", "v1")
        four = layers({"blocks.0.attn.weight": 1.5, "blocks.1.attn.weight": 1.2})
        ids["c4"] = repo.commit(four, "c4", step=300, metrics={"val_loss": 0.7}, branch="lora",
                                capture_env=False).id
        five = dict(four, **{"blocks.1.adapter.weight": np.ones((8, 2), np.float32),
                             "blocks.2.mlp.weight": four["blocks.2.mlp.weight"][:, :4].copy()})
        del five["head.bias"]
        ids["c5"] = repo.commit(five, "c5", step=400, metrics={"val_loss": 0.65}, branch="lora",
                                capture_env=False).id
        for name, acc in (("c2", 0.5), ("c3", 0.6), ("c5", 0.7)):
            repo.note_add(ids[name], {"acc": acc}, ns="eval")
        ids["merge"] = repo.merge("lora", message="merge lora").id
    return ids


@pytest.fixture
def in_repo(series: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory is the `series` repository."""
    monkeypatch.chdir(tmp_path / "r")
    return tmp_path / "r"


# ------------------------------------------------------------------------------------------------------------ metric


def test_metric_png_has_the_size_asked_and_is_not_blank(in_repo: Path) -> None:
    out = ck("plot", "metric", "val_loss", "--size", "640x400", "-o", "loss.png")
    assert png_size(in_repo / "loss.png") == (640, 400)
    assert_not_blank(in_repo / "loss.png")
    assert "loss.png" in out


def test_metric_svg_has_one_line_per_branch_with_a_marker_per_commit(in_repo: Path) -> None:
    done = ckj("plot", "metric", "val_loss", "-o", "loss.svg")
    ids = svg_ids(in_repo / "loss.svg")
    lines = {i: e for i, e in ids.items() if i.startswith("series-")}
    assert sorted(lines) == ["series-lora", "series-main"]
    markers = {i: len(list(e.iter(f"{SVG}use"))) for i, e in lines.items()}
    # main: c1 c2 c3 merge; lora: c1 c2 c4 c5, the history it forked from included
    assert markers == {"series-main": 4, "series-lora": 4}
    assert done == {"path": "loss.svg", "format": "svg", "bytes": (in_repo / "loss.svg").stat().st_size,
                    "kind": "metric", "series": 2, "points": {"lora": 4, "main": 4}}


def test_metric_of_a_note_field_by_branch_and_for_all_commits(in_repo: Path) -> None:
    assert ckj("plot", "metric", "notes.eval.acc", "-o", "acc.svg")["points"] == {"lora": 2, "main": 2}
    assert ckj("plot", "metric", "notes.eval.acc", "--by", "none", "--x", "index", "-o", "all.svg")["points"] == \
        {"all": 3}
    assert [i for i in svg_ids(in_repo / "all.svg") if i.startswith("series-")] == ["series-all"]


@pytest.mark.parametrize("axis", ["time", "index"])
def test_metric_over_time_or_commit_order(in_repo: Path, axis: str) -> None:
    done = ckj("plot", "metric", "val_loss", "--x", axis, "-o", f"{axis}.png")
    assert done["points"] == {"lora": 4, "main": 4}
    assert png_size(in_repo / f"{axis}.png") == (1000, 600)
    assert_not_blank(in_repo / f"{axis}.png")


def test_default_name_in_the_working_directory_or_the_one_given_by_C(in_repo: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert "metric-notes.eval.acc.png" in ck("plot", "metric", "notes.eval.acc")
    assert png_size(in_repo / "metric-notes.eval.acc.png") == (1000, 600)
    away = tmp_path / "away"
    away.mkdir()
    monkeypatch.chdir(away)
    assert "lineage-lora_1.png" in ck("-C", in_repo, "plot", "lineage", "lora~1")
    assert (in_repo / "lineage-lora_1.png").is_file() and list(away.iterdir()) == []


def test_pdf_is_written_too(in_repo: Path) -> None:
    ck("plot", "metric", "val_loss", "-o", "loss.pdf")
    assert (in_repo / "loss.pdf").read_bytes().startswith(b"%PDF-")


def test_the_same_history_draws_the_same_bytes(in_repo: Path) -> None:
    ck("plot", "lineage", "--all", "-o", "a.svg")
    ck("plot", "lineage", "--all", "-o", "b.svg")
    assert (in_repo / "a.svg").read_bytes() == (in_repo / "b.svg").read_bytes()


def test_unknown_metric_names_the_known_ones_and_writes_nothing(in_repo: Path, ck_main) -> None:
    before = no_pictures(in_repo)
    r = ck_main("plot", "metric", "val_los", "-o", "x.png")
    failed(r, 2, "'val_los'", "did you mean val_loss?", "plottable: val_loss, notes.eval.acc")
    assert no_pictures(in_repo) == before


def test_metric_without_points_on_the_axis_asked_says_which(tmp_path: Path, ck_main) -> None:
    with Repo.init(tmp_path / "nostep") as repo:
        repo.commit(layers(), "no step", metrics={"val_loss": 1.0}, capture_env=False)
    r = ck_main("-C", tmp_path / "nostep", "plot", "metric", "val_loss", "-o", "x.png")
    failed(r, 2, "no commit with 'val_loss' has a step", "--x index")
    assert no_pictures(tmp_path / "nostep") == []
    assert ckj("-C", tmp_path / "nostep", "plot", "metric", "val_loss", "--x", "index", "-o", "x.png")["points"] \
        == {"main": 1}


@pytest.mark.parametrize("args, needle", [
    (["metric", "val_loss", "-o", "x.gif"], "unknown picture format '.gif'"),
    (["metric", "val_loss", "-o", "x"], "unknown picture format '(no suffix)'"),
    (["metric", "val_loss", "--by", "author", "-o", "x.png"], "unknown grouping 'author'"),
    (["metric", "val_loss", "--x", "epoch", "-o", "x.png"], "unknown x axis 'epoch'"),
    (["metric", "val_loss", "--size", "12", "-o", "x.png"], "expected WIDTHxHEIGHT"),
    (["lineage", "main", "--all", "-o", "x.png"], "not both"),
    (["lineage", "-n", "0", "-o", "x.png"], "at least one commit"),
    (["lineage", "--all", "--size", "300x60", "-o", "x.png"], "6 commits do not fit in 300x60 pixels"),
    (["diff", "v1", "lora", "--size", "60x60", "-o", "x.png"], "columns of cells do not fit in 60x60 pixels"),
])
def test_bad_arguments_exit_2_and_write_nothing(in_repo: Path, ck_main, args: list[str], needle: str) -> None:
    before = no_pictures(in_repo)
    failed(ck_main("plot", *args), 2, needle)
    assert no_pictures(in_repo) == before


@pytest.mark.parametrize("args, needle", [(["diff", "nope", "v1"], "unknown revision 'nope'"),
                                          (["diff", "v1", "main~9"], "main~9: history is shorter"),
                                          (["lineage", "nope"], "unknown revision 'nope'")])
def test_unknown_revisions_exit_1_and_write_nothing(in_repo: Path, ck_main, args: list[str], needle: str) -> None:
    failed(ck_main("plot", *args, "-o", "x.svg"), 1, needle, "hint: see `ckstore log`")
    assert not (in_repo / "x.svg").exists()


def test_a_failed_render_leaves_the_old_picture_and_no_temporary_file(in_repo: Path, ck_main,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure
    (in_repo / "loss.png").write_bytes(b"the old picture")
    before = sorted(p.name for p in in_repo.iterdir())

    def broken(self, fname, **kwargs):  # the renderer dies after writing part of its output
        fname.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    failed(ck_main("plot", "metric", "val_loss", "-o", "loss.png"), 1, "No space left on device")
    assert (in_repo / "loss.png").read_bytes() == b"the old picture"
    assert sorted(p.name for p in in_repo.iterdir()) == before


def test_without_matplotlib_a_clear_error_and_hint(in_repo: Path, ck_main, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now raises ImportError
    for args in (["metric", "val_loss"], ["diff", "v1", "lora"], ["lineage", "--all"]):
        r = ck_main("plot", *args, "-o", "x.png")
        failed(r, 2, "needs matplotlib", "hint: pip install 'ckstore[plot]'")
    assert no_pictures(in_repo) == []


def test_the_cli_starts_without_importing_matplotlib() -> None:
    code = "import sys, ckstore.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_plot_help_lists_the_three_pictures() -> None:
    out = ck("plot", "--help")
    assert all(name in out for name in ("metric", "diff", "lineage", "ckstore[plot]"))


# -------------------------------------------------------------------------------------------------------------- diff


def test_heat_map_highlights_exactly_the_changed_tensors(in_repo: Path) -> None:
    done = ckj("plot", "diff", "v1", "lora", "-o", "heat.svg")
    cells = {i.removeprefix("cell-"): fill_of(e) for i, e in svg_ids(in_repo / "heat.svg").items()
             if i.startswith("cell-")}
    assert set(cells) == set(layers()) | {"blocks.1.adapter.weight"}  # every tensor of either side, once
    by_fill: dict[str, set[str]] = {}
    for name, fill in cells.items():
        by_fill.setdefault(fill, set()).add(name)
    assert by_fill.pop(ADDED) == {"blocks.1.adapter.weight"}
    assert by_fill.pop(REMOVED) == {"head.bias"}
    assert by_fill.pop(RESHAPED) == {"blocks.2.mlp.weight"}
    assert by_fill.pop(UNCHANGED) == set(layers()) - {"head.bias", "blocks.2.mlp.weight", "blocks.1.attn.weight"}
    assert by_fill == {cells["blocks.1.attn.weight"]: {"blocks.1.attn.weight"}}  # the one changed: a scale colour
    # panels: the numbered group with its cells, the other tensors as one row
    assert done["points"] == {"blocks": 13, "(other)": 2} and done["series"] == 2


def test_heat_colour_grows_with_the_change(in_repo: Path) -> None:
    ck("plot", "diff", "v1", "champion", "-o", "heat.svg")
    ids = svg_ids(in_repo / "heat.svg")
    lightness = {n: colorsys.rgb_to_hls(*(int(fill_of(ids[f"cell-{n}"])[k:k + 2], 16) / 255 for k in (1, 3, 5)))[1]
                 for n in ("blocks.3.attn.weight", "blocks.3.mlp.weight")}
    # x1.01 against x3.0: viridis runs from dark to light, so the larger change is the lighter cell
    assert lightness["blocks.3.mlp.weight"] > lightness["blocks.3.attn.weight"] + 0.2, lightness
    assert fill_of(ids["cell-blocks.0.attn.weight"]) == UNCHANGED


def test_heat_png_against_the_parent_is_not_blank(in_repo: Path) -> None:
    done = ckj("plot", "diff", "lora", "-o", "heat.png")  # lora against its parent c4
    assert done["format"] == "png" and done["bytes"] == (in_repo / "heat.png").stat().st_size
    w, h = png_size(in_repo / "heat.png")
    assert w >= 700 and h >= 300
    assert_not_blank(in_repo / "heat.png")
    ck("plot", "diff", "v1", "lora", "--size", "900x500", "-o", "fit.png")
    assert png_size(in_repo / "fit.png") == (900, 500)


# ----------------------------------------------------------------------------------------------------------- lineage


def test_lineage_of_every_ref_has_one_node_per_commit_and_every_label(in_repo: Path,
                                                                      series: dict[str, str]) -> None:
    done = ckj("plot", "lineage", "--all", "-o", "graph.svg")
    ids = svg_ids(in_repo / "graph.svg")
    assert sorted(i for i in ids if i.startswith("commit-")) == sorted(f"commit-{c}" for c in series.values())
    assert {"ref-branch-main", "ref-branch-lora", "ref-tag-v1", "ref-alias-champion"} <= set(ids)
    assert sorted(i for i in ids if i.startswith("message-")) == sorted(f"message-{c}" for c in series.values())
    assert done["points"] == {"commits": 6}


def test_lineage_of_a_revision_draws_only_its_ancestry(in_repo: Path, series: dict[str, str]) -> None:
    ck("plot", "lineage", "lora", "-o", "lora.svg")
    nodes = {i for i in svg_ids(in_repo / "lora.svg") if i.startswith("commit-")}
    assert nodes == {f"commit-{series[c]}" for c in ("c1", "c2", "c4", "c5")}


def test_lineage_newest_n_as_png(in_repo: Path, series: dict[str, str]) -> None:
    assert ckj("plot", "lineage", "--all", "-n", "2", "-o", "two.svg")["points"] == {"commits": 2}
    nodes = {i for i in svg_ids(in_repo / "two.svg") if i.startswith("commit-")}
    assert nodes == {f"commit-{series['merge']}", f"commit-{series['c5']}"}  # the merge is the newest
    ck("plot", "lineage", "--all", "--size", "800x300", "-o", "graph.png")
    assert png_size(in_repo / "graph.png") == (800, 300)
    assert_not_blank(in_repo / "graph.png")


def test_a_picture_gets_the_users_umask_not_a_private_mode(in_repo: Path) -> None:
    import os
    old = os.umask(0o022)
    try:
        ck("plot", "metric", "val_loss", "-o", "open.png")
        os.umask(0o077)
        ck("plot", "metric", "val_loss", "-o", "private.png")
    finally:
        os.umask(old)
    assert (in_repo / "open.png").stat().st_mode & 0o777 == 0o644
    assert (in_repo / "private.png").stat().st_mode & 0o777 == 0o600
