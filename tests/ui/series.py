"""A small branched training series for the web view's tests: main with 6 commits (metrics loss/acc, steps),
a fine-tune branch `ft` of 3 commits forked at main's third, a tag, an alias, notes, and a verify verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS = 4
LOADER = """
from pathlib import Path
from safetensors.numpy import load_file

def load(ckpt):
    w = load_file(str(Path(ckpt) / "state.safetensors"))
    return lambda x: {"out": x @ w["embed.weight"]}
"""


def state(versions: dict[int, int], ft: int = 0) -> dict[str, np.ndarray]:
    """A tiny transformer-shaped state dict; layer i carries its versions[i]-th seeded update (0: none), and the
    last layer the ft-th fine-tune update."""
    rng = np.random.default_rng(0)
    sd = {"embed.weight": rng.standard_normal((64, 16)).astype(np.float32)}
    for i in range(LAYERS):
        sd[f"blocks.{i}.attn.qkv.weight"] = rng.standard_normal((48, 16)).astype(np.float32)
        sd[f"blocks.{i}.mlp.fc.weight"] = rng.standard_normal((64, 16)).astype(np.float32)
        sd[f"blocks.{i}.norm.weight"] = np.ones(16, np.float32)
    for ns, i, v in [(0, i, v) for i, v in versions.items()] + [(1, LAYERS - 1, ft)]:
        if v:
            upd = np.random.default_rng([ns, i, v])
            for k in (f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.mlp.fc.weight"):
                sd[k] = sd[k] + 0.01 * (i + 1) * upd.standard_normal(sd[k].shape).astype(np.float32)
    return sd


def build(path: Path) -> dict:
    """Make the series at `path`; returns what the pages must show (ids by name, point counts, changed layers)."""
    from ckstore import Repo
    out: dict = {"main": [], "ft": []}
    with Repo.init(path) as repo:
        versions = dict.fromkeys(range(LAYERS), 0)
        for k in range(6):
            if k:
                versions[k % LAYERS] += 1  # commit k changes exactly layer k % 4
            done = repo.commit(state(versions), f"main step {k * 100}",
                               metrics={"loss": 2.0 / (k + 1), "acc": 0.5 + 0.05 * k}, step=k * 100,
                               params={"lr": 1e-3})
            out["main"].append(done.id)
            if k == 2:
                repo.branch("ft", done.id)
        repo.tag("v1", out["main"][3], message="first release")
        forked = {0: 0, 1: 1, 2: 1, 3: 0}  # main's third commit (k=2): layers 1 and 2 once
        for k in range(3):  # the fine-tune changes only the last layer
            done = repo.commit(state(forked, ft=k + 1), f"ft step {300 + k * 100}", branch="ft",
                               metrics={"loss": 0.9 - 0.1 * k}, step=300 + k * 100, params={"lr": 1e-4})
            out["ft"].append(done.id)
        repo.note_add(out["main"][4], {"acc": 0.71, "suite": "mmlu-mini"}, ns="eval")
        repo.note_add(out["main"][5], {"acc": 0.74, "suite": "mmlu-mini"}, ns="eval")
        repo.alias_set("prod", out["main"][3], reason="best so far")
        (repo.root / "seriesmodel.py").write_text(LOADER)  # the project's loader, beside the repository
        np.savez(path / "inputs.npz", x=np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32))
        repo.add_probe(out["main"][5], path / "inputs.npz", "seriesmodel:load")
        out["verified"] = repo.verify(out["main"][5]).passed
    # main: 6 points of loss; ft: its lineage = main's first 3 + 3 of its own
    out["changed_last"] = ["blocks.1.attn.qkv.weight", "blocks.1.mlp.fc.weight"]  # main[4] -> main[5]: 5 % 4
    return out
