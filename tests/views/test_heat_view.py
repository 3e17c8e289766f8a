"""views.heat: tensors as cells of numbered groups, and a colour scale that no infinite change can stretch."""

from __future__ import annotations

import math

from ckstore.views.heat import changed_cells, heat


def diff(changed: list[dict], unchanged: list[str] = (), added: list[str] = (), removed: list[str] = ()) -> dict:
    """A diff as `Diff.to_dict()` gives it (only the parts the map reads)."""
    return {"tensors": {"changed": changed, "unchanged": list(unchanged), "added": list(added),
                        "removed": list(removed)}}


def change(name: str, rel: float) -> dict:
    return {"name": name, "comparable": True, "rel_l2": rel, "frac_changed": 1.0}


def test_groups_rows_in_numeric_order_and_the_rest_aside() -> None:
    view = heat(diff([change("h.10.w", 0.5)], unchanged=["h.2.w", "h.2.b", "emb"], added=["h.10.b"]))
    assert [(g["name"], g["rows"], g["cols"]) for g in view["groups"]] == [("h", ["2", "10"], ["b", "w"])]
    assert [[c["status"] for c in r] for r in view["groups"][0]["cells"]] == [["unchanged", "unchanged"],
                                                                            ["added", "changed"]]
    assert [c["name"] for c in view["other"]] == ["emb"]
    assert changed_cells(view) == ["h.10.b", "h.10.w"]


def test_infinite_or_nan_changes_do_not_set_the_scale() -> None:
    # NaN first in name order: max() starting from a NaN never leaves it
    view = heat(diff([change("a.0.w", math.nan), change("a.1.w", 0.25), change("a.2.w", math.inf),
                      change("a.3.w", 0.5)]))
    assert view["max_rel_l2"] == 0.5
