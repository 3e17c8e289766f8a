"""views.draw and views.charts without a repository: file names, formats, sizes, and cells a diff cannot scale."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ckstore.errors import UsageError
from ckstore.views import charts, draw
from ckstore.views.heat import heat


@pytest.mark.parametrize("text, expected", [("1200x800", (1200, 800)), (" 640 X 480 ", (640, 480)),
                                            ("300×200", (300, 200)), (None, None)])
def test_sizes_parse(text: str | None, expected: tuple[int, int] | None) -> None:
    assert draw.parse_size(text) == expected


@pytest.mark.parametrize("text", ["1200", "1200x", "x800", "0x100", "10x10", "1200x70000", "-5x100", "1e3x800"])
def test_bad_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="expected WIDTHxHEIGHT"):
        draw.parse_size(text)


@pytest.mark.parametrize("name, fmt", [("a.png", "png"), ("b.SVG", "svg"), ("dir.v2/c.pdf", "pdf")])
def test_the_suffix_picks_the_format(name: str, fmt: str) -> None:
    assert draw.format_of(Path(name)) == fmt


@pytest.mark.parametrize("name", ["a.jpg", "a", "a.png.bak", "png"])
def test_other_suffixes_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="unknown picture format") as e:
        draw.format_of(Path(name))
    assert ".png, .svg, .pdf" in e.value.hint


def test_default_names_keep_only_safe_characters() -> None:
    assert draw.default_name("metric", "notes.eval.acc") == "metric-notes.eval.acc.png"
    assert draw.default_name("diff", "HEAD~1", "feat/x y") == "diff-HEAD_1-feat_x_y.png"
    assert draw.default_name("lineage", "../../etc") == "lineage-.._.._etc.png"  # no separator survives


def test_a_non_finite_change_gets_its_own_colour_and_leaves_the_scale_alone(tmp_path: Path) -> None:
    cells = [{"name": f"a.{i}.w", "comparable": True, "rel_l2": rel, "frac_changed": 1.0}
             for i, rel in enumerate([0.001, math.inf, 0.1])]
    view = heat({"tensors": {"changed": cells, "unchanged": [], "added": [], "removed": []}})
    out = tmp_path / "h.svg"
    written = draw.save(charts.heat_chart(view, title="t"), out, "svg")
    assert written == out.stat().st_size
    fills = {}
    for e in ET.parse(out).getroot().iter():
        if (e.get("id") or "").startswith("cell-"):
            path = next(p for p in e.iter() if p.tag.endswith("path"))
            fills[e.get("id")] = re.search(r"fill:\s*(#[0-9a-f]{6})", path.get("style"))[1]
    assert fills["cell-a.1.w"] == charts.NONFINITE
    assert len({fills["cell-a.0.w"], fills["cell-a.2.w"], charts.NONFINITE}) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["h.svg"]  # the temporary file was renamed, none is left


def test_a_picture_too_large_for_png_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    fig = charts.figure(700, 1)  # 70,000 pixels wide
    with pytest.raises(UsageError, match="too large for PNG") as e:
        draw.save(fig, tmp_path / "wide.png", "png")
    assert ".svg" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_picture_as_json() -> None:
    p = draw.Picture("m.png", "png", 123, "metric", {"main": 3, "exp": 2})
    assert p.to_dict() == {"path": "m.png", "format": "png", "bytes": 123, "kind": "metric", "series": 2,
                           "points": {"main": 3, "exp": 2}}
