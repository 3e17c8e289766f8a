#!/usr/bin/env python3
"""Write the frozen repositories of `tests/test_frozen.py`: small repositories in each format version and with
each feature, made once by the ckstore of their day and then never rewritten. A later ckstore must read, verify
and check them out byte-identical forever; `expected.json` beside them records what they hold.

    python tests/data/frozen/make.py NAME        # writes tests/data/frozen/NAME (refuses to overwrite)

Add a new NAME when a format version or a feature changes what is on disk; never regenerate an existing one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

import ckstore  # noqa: E402

PASSPHRASE = "frozen repositories"


def _checkpoint(path: Path, step: int) -> None:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 96)).astype(np.float32)
    w[: step * 8] += step * 0.01                 # each step changes some rows: deltas against the step before
    path.mkdir(parents=True, exist_ok=True)
    save_file({"layer.weight": w, "layer.bias": np.full(96, step, np.float32)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"step": step, "hidden": 96}) + "\n")


def _extras(path: Path, step: int) -> None:
    """Files of version 3's features and formats: an opaque file over 64 KiB that gains lines at its front each
    step (content-cut chunks), and a GGUF file with quantized blocks."""
    import gguf
    rng = np.random.default_rng(1)
    vocab = [f"tok{i}-{rng.integers(1 << 30)}" for i in range(12000)]
    head = [f"added-at-step-{s}" for s in range(step)]
    (path / "tokenizer.json").write_text(json.dumps({"vocab": head + vocab}) + "\n")
    w = gguf.GGUFWriter(str(path / "model.gguf"), "llama")
    w.add_name(f"frozen-{step}")
    weight = rng.standard_normal((64, 256)).astype(np.float32)
    weight[:step] += 1.0
    q = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.w", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("norm", np.ones(256, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _history(repo: ckstore.Repo, work: Path, extras: bool = False) -> None:
    for step in range(3):
        _checkpoint(work / "ck", step)
        if extras:
            _extras(work / "ck", step)
        repo.commit(work / "ck", f"step {step}", step=step, metrics={"loss": 1.0 / (step + 1)}, capture_env=False)
    repo.tag("best", "HEAD~1")
    repo.branch("experiment", "HEAD~2")
    repo.note_add("HEAD", {"eval": "passed"}, message="frozen")


def _expected(repo: ckstore.Repo, root: Path) -> dict:
    out: dict = {"commits": []}
    for info in repo.log(all=True):
        dest = root / "expected-out" / info.id
        repo.checkout(info.id, dest)
        files = {p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(dest.rglob("*")) if p.is_file()}
        out["commits"].append({"id": info.id, "message": info.commit.message, "files": files})
    shutil.rmtree(root / "expected-out")
    out["refs"] = {name: oid.hex() for name, oid in repo.engine.refs.list().items()}
    return out


def make(name: str) -> Path:
    """Write the frozen repository `name`: v1-basic, v1-partial, v2-encrypted, v3-cdc or v3-encrypted."""
    target = HERE / name
    if target.exists():
        raise SystemExit(f"{target} exists: frozen repositories are never rewritten")
    work = HERE / f".work-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        if name == "v1-basic":
            repo = ckstore.Repo.init(work / "repo")
            _history(repo, work)
        elif name == "v2-encrypted":
            repo = ckstore.Repo.init(work / "repo", encrypt=PASSPHRASE)
            _history(repo, work)
        elif name in ("v3-cdc", "v3-encrypted"):   # version 3: features ["cdc"]; GGUF's block types
            repo = ckstore.Repo.init(work / "repo", encrypt=PASSPHRASE if name == "v3-encrypted" else None)
            _history(repo, work, extras=True)
        elif name == "v1-partial":
            src = ckstore.Repo.init(work / "src")
            _history(src, work)
            src.remote_add("origin", str(work / "remote"))
            src.push("origin")
            expected = _expected(src, work)      # from the source: checking out the clone would fill it in
            src.close()
            repo = ckstore.clone(str(work / "remote"), work / "repo", depth=1)
        else:
            raise SystemExit(f"unknown frozen repository {name!r}")
        if name != "v1-partial":
            expected = _expected(repo, work)
        else:                                    # the clone's own refs (its branch, tags, remote-tracking refs)
            expected["refs"] = {n: oid.hex() for n, oid in repo.engine.refs.list().items()}
        expected["passphrase"] = PASSPHRASE if name.endswith("encrypted") else None
        repo.close()
        target.mkdir()
        shutil.copytree(work / "repo" / ".ckstore", target / "repo" / ".ckstore",
                        ignore=shutil.ignore_patterns("cache", "tmp", "locks"))
        if (work / "remote").exists():
            shutil.copytree(work / "remote", target / "remote", ignore=shutil.ignore_patterns("tmp", "locks"))
        (target / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(make(arg))
