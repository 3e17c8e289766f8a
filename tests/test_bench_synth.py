"""The synthetic size-L series of bench/scenarios.py (lib/synth.py), through its tiny twin Ltiny: same code path."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from lib import synth  # noqa: E402
from lib.gpt import GPT  # noqa: E402
from lib.shapes import SYNTH_SIZES  # noqa: E402

TINY = SYNTH_SIZES["Ltiny"]


def generate(out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "scenarios.py"), "--size", "Ltiny", "--scenario", "all",
                    "--dtype", "all", "--out", str(out), *extra], check=True, capture_output=True, timeout=300)


def tensors(version: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(version.glob("*.safetensors")):
        part = load_file(str(f))
        assert not set(part) & set(out), "a tensor in two shards"
        out.update(part)
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out)
    return out


def test_versions_are_the_mix_series(series: Path):
    s = TINY.shape
    model = GPT(s).state_dict()
    v = [tensors(series / "mix-fp32" / f"v{k}") for k in range(4)]
    assert {k: tuple(t.shape) for k, t in v[0].items()} == {k: tuple(t.shape) for k, t in model.items()}
    lora = set(v[3]) - set(v[0])
    assert lora and all(".lora_" in k and (".attn.qkv." in k or ".attn.proj." in k) for k in lora)
    assert len(lora) == 4 * s.layers
    top = synth.top_first(s)
    partial = [f"blocks.{i}." for i in range(top, s.layers)] + ["ln_f.", "lm_head."]
    for k, t0 in v[0].items():
        if k.endswith(".bias"):
            assert (t0 == 0).all()
        elif ".ln" in k or k.startswith("ln_"):
            assert (t0 == 1).all()
        else:
            want = 0.02 / (2 * s.layers) ** 0.5 if k.endswith(("attn.proj.weight", "mlp.proj.weight")) else 0.02
            assert abs(t0.std().item() / want - 1) < 0.1, k
        d1 = (v[1][k] - t0).abs()
        assert (d1 > 0).float().mean() > 0.99 and d1.max() <= synth.LR * 1.01, k  # every element moves, ≤ lr
        changed2 = not torch.equal(v[2][k], v[1][k])
        assert changed2 == any(k.startswith(p) for p in partial), k
        assert torch.equal(v[3][k], v[2][k])
    b = v[3]["blocks.0.attn.qkv.lora_B.weight"].abs()
    assert b.max() <= synth.LR and b.median() > 0.9 * synth.LR


def test_bf16_is_the_cast_of_fp32_and_sharded_holds_the_same_tensors(series: Path):
    for k in range(4):
        f32 = tensors(series / "mix-fp32" / f"v{k}")
        b16 = tensors(series / "mix-bf16" / f"v{k}")
        assert all(b16[n].dtype == torch.bfloat16 and torch.equal(b16[n], t.to(torch.bfloat16)) for n, t in f32.items())
        for dt, flat in (("fp32", f32), ("bf16", b16)):
            folder = series / f"mixsharded-{dt}" / f"v{k}"
            sharded = tensors(folder)
            assert sharded.keys() == flat.keys() and all(torch.equal(sharded[n], flat[n]) for n in flat)
            index = json.loads((folder / "model.safetensors.index.json").read_text())
            shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
            assert len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
            assert index["metadata"]["total_size"] == sum(t.nbytes for t in flat.values())
            for name in shards:
                assert set(load_file(str(folder / name))) == {n for n, f in index["weight_map"].items() if f == name}
            assert json.loads((folder / "config.json").read_text())["n_embd"] == TINY.shape.d
    info = json.loads((series / "mixsharded-bf16" / "series.json").read_text())
    assert "untrained" in info["weights"] and "untrained" in info["versions"][0]["description"]
    assert info["size"] == "Ltiny" and info["params"] == sum(t.numel() for t in GPT(TINY.shape).state_dict().values())


def test_generation_is_deterministic_and_a_prefix_of_versions(series: Path, tmp_path: Path):
    generate(tmp_path / "again")
    assert digests(tmp_path / "again") == digests(series)
    subprocess.run([sys.executable, str(ROOT / "bench" / "scenarios.py"), "--size", "Ltiny", "--scenario",
                    "mixsharded", "--dtype", "bf16", "--versions", "1", "--out", str(tmp_path / "v0")], check=True,
                   capture_output=True, timeout=120)
    v0 = digests(tmp_path / "v0" / "mixsharded-bf16" / "v0")
    assert v0 == digests(series / "mixsharded-bf16" / "v0")
    assert not (tmp_path / "v0" / "mixsharded-bf16" / "v1").exists()


def test_series_runs_end_to_end(series: Path, tmp_path: Path):
    """series.py at Ltiny: the L pipeline (generation already done, ckstore and cp measured, report built)."""
    out, md = tmp_path / "out", tmp_path / "bench.md"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "series.py"), "--size", "Ltiny", "--scenarios",
                        "mixsharded", "--dtypes", "bf16", "--tools", "ckstore,copy", "--repeat", "1", "--inputs",
                        str(series), "--out", str(out), "--work", str(tmp_path / "work"), "--md", str(md)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    s = res["series"]["mixsharded-bf16"]
    assert s["size"] == "Ltiny" and s["adapter"]["version"] == 3
    for tool in ("ckstore", "copy"):
        assert s["tools"][tool]["identical"] and len(s["tools"][tool]["commits"]) == 4
    assert any(t["target"].startswith("size L:") for t in res["targets"])
    assert "(size Ltiny;" in md.read_text()
