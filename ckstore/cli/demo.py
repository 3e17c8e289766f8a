"""`ckstore demo`: train a small numpy model, version its checkpoints, and show what the store did."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..api import Repo
from ..formats.safetensors import build_header
from .render import human_bytes, render_log, render_show

D_IN, D_HIDDEN, D_OUT, LAYERS = 64, 256, 16, 4


def _init_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    model = {"embed.weight": rng.standard_normal((D_IN, D_HIDDEN)).astype(np.float32) * 0.1}
    for i in range(LAYERS):
        model[f"blocks.{i}.weight"] = (rng.standard_normal((D_HIDDEN, D_HIDDEN)) / np.sqrt(D_HIDDEN)).astype(np.float32)
        model[f"blocks.{i}.bias"] = np.zeros(D_HIDDEN, np.float32)
    model["head.weight"] = (rng.standard_normal((D_HIDDEN, D_OUT)) * 0.05).astype(np.float32)
    return model


def _train(model: dict, x: np.ndarray, y: np.ndarray, steps: int, lr: float, frozen: set[str]) -> float:
    """Plain SGD on mean squared error (numpy backprop through a tanh MLP)."""
    loss = 0.0
    for _ in range(steps):
        acts = [x @ model["embed.weight"]]
        for i in range(LAYERS):
            acts.append(np.tanh(acts[-1] @ model[f"blocks.{i}.weight"] + model[f"blocks.{i}.bias"]))
        pred = acts[-1] @ model["head.weight"]
        err = (pred - y) / len(x)
        loss = float(np.mean((pred - y) ** 2))
        grads = {"head.weight": acts[-1].T @ err}
        delta = err @ model["head.weight"].T
        for i in reversed(range(LAYERS)):
            delta = delta * (1 - acts[i + 1] ** 2)
            grads[f"blocks.{i}.weight"] = acts[i].T @ delta
            grads[f"blocks.{i}.bias"] = delta.sum(0)
            delta = delta @ model[f"blocks.{i}.weight"].T
        grads["embed.weight"] = x.T @ delta
        for name, g in grads.items():
            if name not in frozen:
                model[name] = (model[name] - lr * g).astype(np.float32)
    return loss


def _save(model: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(model)
    header = build_header([(n, "F32", model[n].shape, model[n].nbytes) for n in names], {"format": "np"})
    with open(out / "model.safetensors", "wb") as f:
        f.write(header)
        for n in names:
            f.write(model[n].tobytes())
    config = {"architecture": "tanh-mlp", "d_in": D_IN, "d_hidden": D_HIDDEN, "layers": LAYERS}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def run(echo: Callable[[str], None] = print) -> None:
    """Run the demo in a fresh temporary directory, printing through `echo`; the directory is removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="ckstore-demo-"))
    try:
        _run(work, echo)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, echo: Callable[[str], None]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, D_IN)).astype(np.float32)
    y = np.sin(x[:, :D_OUT]).astype(np.float32)
    model = _init_model(rng)
    plan = [  # (message, steps, lr, frozen layers): dense training, then fine-tuning only the top
        ("initial weights", 0, 0.0, set()),
        ("train 20 steps", 20, 0.05, set()),
        ("train 20 more steps", 20, 0.05, set()),
        ("fine-tune head only", 10, 0.05, {n for n in model if n != "head.weight"}),
        ("fine-tune head only, lower lr", 10, 0.01, {n for n in model if n != "head.weight"}),
    ]
    echo(f"demo: a {sum(a.size for a in model.values()):,}-parameter model, {len(plan)} checkpoints, in {work}")
    with Repo.init(work / "repo") as repo:
        step, logical = 0, 0
        for i, (message, steps, lr, frozen) in enumerate(plan):
            loss = _train(model, x, y, steps, lr, frozen) if steps else float(np.mean((y) ** 2))
            step += steps
            ckpt = work / f"checkpoint-{step}"
            _save(model, ckpt)
            info = repo.commit(ckpt, message, metrics={"loss": loss}, step=step, params={"lr": lr},
                               meta={"data": {"version": "synthetic-v1"}, "seeds": {"numpy": 0}},
                               tag="baseline" if i == 0 else None)
            shown = repo.show(info.id)
            logical += shown.logical_bytes
            echo(f"committed {info.id[:12]}  step {step:>3}  loss {loss:.4f}  "
                 f"new {human_bytes(shown.new_bytes):>10} of {human_bytes(shown.logical_bytes)}")
        echo("\n$ ckstore log --oneline")
        render_log(repo.log(), oneline=True, graph=False)
        echo("\n$ ckstore show HEAD~2")
        render_show(repo.show("HEAD~2"))
        _verify_checkout(repo, work, echo)
        stored = sum(p.stat().st_size for p in (repo.dir).rglob("*") if p.is_file() and "cache" not in p.parts)
        echo(f"\n{len(plan)} checkpoints: {human_bytes(logical)} logical, {human_bytes(stored)} in the repository "
             f"({logical / stored:.2f}× smaller)")
        _lifecycle(repo, echo)
        report = repo.fsck(read_data=True)
        echo(f"fsck --read-data: {'clean' if report.ok else report.problems}")
        if not report.ok:
            raise SystemExit(1)


def _verify_checkout(repo: Repo, work: Path, echo: Callable[[str], None]) -> None:
    """Check out the baseline tag and compare every byte with the checkpoint it came from."""
    dest = work / "restored"
    files = repo.checkout("baseline", dest)
    original = work / "checkpoint-0"
    same = all((dest / f).read_bytes() == (original / f).read_bytes() for f in files)
    echo(f"\n$ ckstore checkout baseline -o restored\n{len(files)} files restored, byte-identical: {same}")
    if not same:
        raise SystemExit(1)


def _lifecycle(repo: Repo, echo: Callable[[str], None]) -> None:
    """Keep the newest two checkpoints, the best by loss and the tagged baseline; gc frees the rest."""
    from ..model.retention import Policy
    from .render import render_du, render_forget
    policy = Policy(keep_last=2, keep_best=1, metric="loss")
    echo("\n$ ckstore forget --keep-last 2 --keep-best 1 --metric loss")
    render_forget(repo.forget(policy))
    echo("\n$ ckstore gc --now")
    echo(repo.gc(now=True).summary())
    echo("\n$ ckstore du")
    render_du(repo.du())
