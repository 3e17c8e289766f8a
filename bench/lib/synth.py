"""Synthetic GPT checkpoints for size L: untrained weights, realistic shapes and value spreads, numpy only.

Training a 0.84B-parameter model with torch on 2 CPU cores is out of reach, so the L series are not trained:

- v0 is the GPT-2 initialisation of lib/gpt.py's model (weights normal(0, 0.02), the residual projections
  `attn.proj` and `mlp.proj` normal(0, 0.02 / sqrt(2 * layers)), LayerNorm weights 1, biases 0);
- v1 adds an Adam-like update to every element of every tensor: lr * U(-1, 1), lr 3e-4. One Adam step of the
  trained sizes moves each element by |delta| spread over 0..lr (median ~0.5 lr, measured on the S mix series), which
  is a relative change of ~0.8% of a normal(0, 0.02) weight's norm; the synthetic step matches that;
- v2 adds another such update to the top quarter of blocks, `ln_f` and `lm_head` only (the rest bit-identical);
- v3 is v2 unchanged plus r=8 LoRA adapters on every `attn.qkv` / `attn.proj` as after one adapter step:
  lora_A kaiming-uniform (U(+-1/sqrt(in))), lora_B ~ +-lr (Adam's first step from zero is lr * g / (|g| + eps)).

The versions and names are those of the "mix" series of scenarios.py (sizes S and M); "mixsharded" holds the
same tensors in the Hugging Face sharded layout (shards of at most `shard_bytes`, filled in state-dict order as
huggingface_hub does, tensors sorted by name inside each shard as save_file does, plus
`model.safetensors.index.json` and `config.json`); v3's adapters join the shard of their layer.

Values are computed in float32 piece by piece (a piece is whole rows, about `piece` elements; every piece has
its own seeded PCG64 stream per version, so nothing depends on the order of work) and bf16 is the float32 cast
with round-to-nearest-even, as torch casts. Every version's file header is written first and the data streamed
behind it, all versions in one pass: memory stays at a few pieces, whatever the model size.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from .safetensors_io import encode_header
from .shapes import LORA_ALPHA, LORA_R, SYNTH_SIZES, Size

SEED = 1234  # scenarios.py's
LR = 3e-4
INIT_STD = 0.02
ST_METADATA = {"format": "pt"}
SCENARIOS = ["mix", "mixsharded"]
DTYPES = {"fp32": ("F32", 4, "float32"), "bf16": ("BF16", 2, "bfloat16")}
VERSIONS = 4
# random streams of a piece: the initial values, the v1 and v2 updates, the adapters
INIT, STEP1, STEP2 = 0, 1, 2

WEIGHTS_NOTE = ("synthetic (bench/lib/synth.py): untrained GPT-2-initialised weights with realistic shapes and value "
                "spreads; later versions are deterministic Adam-like and LoRA updates, not training")


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    kind: str  # normal, resid, ones, zeros, lora_A, lora_B
    partial: bool = False  # updated again in v2
    lora: bool = False  # in v3 only

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def top_first(s: Size) -> int:
    """The first block of the top quarter (scenarios.py's top_quarter)."""
    return s.layers - max(1, s.layers // 4)


def tensor_specs(s: Size, lora: bool = False) -> list[Spec]:
    """lib/gpt.py's GPT tensors in state-dict order; with lora, v3's adapters right after their layer's bias."""
    top = top_first(s)
    specs = [Spec("tok_emb.weight", (s.vocab, s.d), "normal"), Spec("pos_emb.weight", (s.ctx, s.d), "normal")]

    def linear(prefix: str, out: int, inp: int, kind: str, partial: bool, adapters: bool) -> None:
        specs.extend([Spec(f"{prefix}.weight", (out, inp), kind, partial), Spec(f"{prefix}.bias", (out,), "zeros", partial)])
        if adapters:
            specs.extend([Spec(f"{prefix}.lora_A.weight", (LORA_R, inp), "lora_A", lora=True),
                          Spec(f"{prefix}.lora_B.weight", (out, LORA_R), "lora_B", lora=True)])

    def norm(prefix: str, partial: bool) -> None:
        specs.extend([Spec(f"{prefix}.weight", (s.d,), "ones", partial), Spec(f"{prefix}.bias", (s.d,), "zeros", partial)])

    for i in range(s.layers):
        p, partial = f"blocks.{i}", i >= top
        norm(f"{p}.ln1", partial)
        linear(f"{p}.attn.qkv", 3 * s.d, s.d, "normal", partial, lora)
        linear(f"{p}.attn.proj", s.d, s.d, "resid", partial, lora)
        norm(f"{p}.ln2", partial)
        linear(f"{p}.mlp.fc", 4 * s.d, s.d, "normal", partial, False)
        linear(f"{p}.mlp.proj", s.d, 4 * s.d, "resid", partial, False)
    norm("ln_f", True)
    specs.append(Spec("lm_head.weight", (s.vocab, s.d), "normal", True))
    return specs


def arithmetic(size: str) -> str:
    """The parameter count and bytes per version of a synthetic size, worked out."""
    s = SYNTH_SIZES[size].shape
    emb, pos, block = s.vocab * s.d, s.ctx * s.d, 12 * s.d * s.d + 13 * s.d
    total = 2 * emb + pos + s.layers * block + 2 * s.d
    assert total == sum(t.numel for t in tensor_specs(s))
    lora = sum(t.numel for t in tensor_specs(s, lora=True) if t.lora)
    return (f"GPT d={s.d}, {s.layers} layers, {s.heads} heads, vocab {s.vocab}, ctx {s.ctx}, untied head: "
            f"tok_emb {s.vocab}x{s.d} = {emb:,} + pos_emb {s.ctx}x{s.d} = {pos:,} + {s.layers} blocks x "
            f"(12*d^2 + 13*d = {block:,}) + ln_f 2*d = {2 * s.d:,} + lm_head {emb:,} = {total:,} params "
            f"({total / 1e9:.3f}B); per version {2 * total / 1e9:.3f} GB bf16 / {4 * total / 1e9:.3f} GB fp32 "
            f"(+ header); v3 adds {lora:,} LoRA params; largest tensor {emb:,} elements "
            f"({2 * emb / 1e6:.1f} MB bf16)")


# ---------------------------------------------------------------- values


def rng(name: str, piece: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([SEED, zlib.crc32(name.encode()), piece, stream])))


def pieces(spec: Spec, piece: int) -> list[int]:
    """Element counts of the pieces of a tensor: whole rows, about `piece` elements each."""
    row = math.prod(spec.shape[1:])
    step = max(1, piece // row) * row
    return [min(step, spec.numel - start) for start in range(0, spec.numel, step)]


def initial(spec: Spec, s: Size, i: int, n: int) -> np.ndarray:
    if spec.kind == "ones":
        return np.ones(n, np.float32)
    if spec.kind == "zeros":
        return np.zeros(n, np.float32)
    g = rng(spec.name, i, INIT)
    if spec.kind in ("normal", "resid"):
        x = g.standard_normal(n, dtype=np.float32)
        x *= np.float32(INIT_STD if spec.kind == "normal" else INIT_STD / math.sqrt(2 * s.layers))
        return x
    if spec.kind == "lora_A":  # nn.init.kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = np.float32(1 / math.sqrt(spec.shape[1]))
        x = g.random(n, dtype=np.float32)
        x *= 2 * bound
        x -= bound
        return x
    if spec.kind == "lora_B":  # zeros, then one Adam step: -lr * g / (|g| + eps), nearly +-lr
        z = g.standard_normal(n, dtype=np.float32)
        return (np.float32(LR) * z / (np.abs(z) + np.float32(1e-2))).astype(np.float32)
    raise ValueError(spec.kind)


def update(spec: Spec, i: int, n: int, stream: int) -> np.ndarray:
    """An Adam-like step: every element moves by lr * U(-1, 1)."""
    x = rng(spec.name, i, stream).random(n, dtype=np.float32)
    x *= np.float32(2 * LR)
    x -= np.float32(LR)
    return x


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (torch's cast for finite values)."""
    u = x.view(np.uint32)
    t = u >> 16
    t &= 1
    t += 0x7FFF
    t += u
    t >>= 16
    return t.astype(np.uint16)


# ---------------------------------------------------------------- writing


class StreamWriter:
    """A safetensors file whose header is written first and whose tensors then arrive in name order, in pieces."""

    def __init__(self, path: Path, specs: list[Spec], dtype: str) -> None:
        code, width, _ = DTYPES[dtype]
        header: dict[str, object] = {"__metadata__": ST_METADATA}
        self.order: list[tuple[str, int]] = []
        off = 0
        for sp in sorted(specs, key=lambda t: t.name):  # save_file's order (one dtype: by name)
            nb = sp.numel * width
            header[sp.name] = {"dtype": code, "shape": list(sp.shape), "data_offsets": [off, off + nb]}
            self.order.append((sp.name, nb))
            off += nb
        raw = encode_header(header)
        self.size = len(raw) + off
        self.path = path
        self.f: BinaryIO = open(path, "wb")
        self.f.write(raw)
        self.next, self.left = 0, 0

    def write(self, name: str, data: np.ndarray) -> None:
        if self.left == 0:
            expected, self.left = self.order[self.next]
            assert name == expected, f"{self.path}: {name} arrived, {expected} expected"
            self.next += 1
        assert data.nbytes <= self.left, f"{self.path}: too many bytes for {name}"
        self.f.write(memoryview(np.ascontiguousarray(data)))
        self.left -= data.nbytes

    def close(self) -> None:
        size = self.f.tell()
        self.f.close()
        assert self.next == len(self.order) and self.left == 0 and size == self.size, f"{self.path}: incomplete"


def shard(specs: list[Spec], width: int, max_bytes: int) -> list[list[Spec]]:
    """Tensors in state-dict order into shards of at most max_bytes (one larger tensor alone), as huggingface_hub."""
    shards: list[list[Spec]] = [[]]
    size = 0
    for sp in specs:
        nb = sp.numel * width
        if shards[-1] and size + nb > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(sp)
        size += nb
    return shards


def write_json(obj: object, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def config(s: Size, dtype: str) -> dict[str, object]:
    """config.json of the sharded layout: the shape, as a transformers config states it."""
    return {"architectures": ["GPT"], "model_type": "ckstore-bench-gpt", "n_embd": s.d, "n_layer": s.layers,
            "n_head": s.heads, "vocab_size": s.vocab, "n_positions": s.ctx, "tie_word_embeddings": False,
            "layer_norm_epsilon": 1e-5, "torch_dtype": DTYPES[dtype][2], "weights": WEIGHTS_NOTE}


class SeriesLike(Protocol):
    root: Path

    def version(self, description: str) -> Path: ...


def descriptions(s: Size, sharded: bool) -> list[str]:
    top = top_first(s)
    where = "in the shard of their layer" if sharded else "in model.safetensors"
    return [
        f"untrained, synthetic: GPT-2 initialisation (weights normal(0, {INIT_STD}), attn.proj/mlp.proj normal(0, "
        f"{INIT_STD}/sqrt(2*{s.layers})), LayerNorm weights 1, biases 0): realistic shapes and value spreads, "
        "not trained weights",
        f"+1 synthetic Adam-like update of every element of every tensor: lr * U(-1, 1), lr {LR:g}",
        f"+1 synthetic Adam-like update on blocks.{top}-{s.layers - 1}, ln_f, lm_head only (the rest bit-identical)",
        f"base unchanged + r={LORA_R} LoRA (alpha {LORA_ALPHA}) on attn qkv/proj as after 1 adapter step "
        f"(A kaiming-uniform, B ~ +-lr), {where}",
    ]


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def write_series(series: SeriesLike, size: str, dtype: str, scenario: str, versions: int = VERSIONS) -> dict:
    """Write v0 .. v{versions-1} of scenario (mix or mixsharded) through series.version(); the series.json info."""
    if scenario not in SCENARIOS:
        raise ValueError(f"size {size} has the scenarios {', '.join(SCENARIOS)}, not {scenario!r}")
    if not 1 <= versions <= VERSIONS:
        raise ValueError(f"versions: 1..{VERSIONS}")
    syn = SYNTH_SIZES[size]
    s, width = syn.shape, DTYPES[dtype][1]
    sharded = scenario == "mixsharded"
    base, full = tensor_specs(s), tensor_specs(s, lora=True)
    need = sum(sp.numel * width for k in range(versions) for sp in (full if k == 3 else base))
    if need > free_bytes(series.root) - (1 << 30):
        raise OSError(f"{scenario}-{dtype} at size {size} needs {need / 1e9:.1f} GB; "
                      f"{free_bytes(series.root) / 1e9:.1f} GB free under {series.root}")
    writers: list[dict[str, StreamWriter]] = []  # per version: tensor name -> the writer of its file
    for k, desc in enumerate(descriptions(s, sharded)[:versions]):
        folder = series.version(desc)
        specs = full if k == 3 else base
        groups = shard(specs, width, syn.shard_bytes) if sharded else [specs]
        files = ([f"model-{i:05d}-of-{len(groups):05d}.safetensors" for i in range(1, len(groups) + 1)] if sharded
                 else ["model.safetensors"])
        by_name: dict[str, StreamWriter] = {}
        for fname, group in zip(files, groups):
            w = StreamWriter(folder / fname, group, dtype)
            by_name.update({sp.name: w for sp in group})
        if sharded:
            write_json({"metadata": {"total_size": sum(sp.numel * width for sp in specs)},
                        "weight_map": {sp.name: f for f, g in zip(files, groups) for sp in g}},
                       folder / "model.safetensors.index.json")
            write_json(config(s, dtype), folder / "config.json")
        writers.append(by_name)
    cast = to_bf16 if dtype == "bf16" else (lambda x: x)
    # one pass in name order: each file receives its own tensors in name order, so each is written sequentially
    for sp in sorted(full, key=lambda t: t.name):
        for i, n in enumerate(pieces(sp, syn.piece)):
            if sp.lora:
                if versions > 3:
                    writers[3][sp.name].write(sp.name, cast(initial(sp, s, i, n)))
                continue
            w = initial(sp, s, i, n)
            writers[0][sp.name].write(sp.name, cast(w))
            if versions == 1:
                continue
            w += update(sp, i, n, STEP1)
            out = cast(w)
            writers[1][sp.name].write(sp.name, out)
            if sp.partial:
                w += update(sp, i, n, STEP2)
                out = cast(w)
            for k in range(2, versions):
                writers[k][sp.name].write(sp.name, out)
    for w in {id(w): w for by_name in writers for w in by_name.values()}.values():
        w.close()
    total = sum(sp.numel for sp in base)
    return {"weights": WEIGHTS_NOTE, "params": total, "layout": (
        f"Hugging Face sharded: shards of at most {syn.shard_bytes / 1e6:g} MB + model.safetensors.index.json + "
        "config.json" if sharded else "one model.safetensors"), "shape": arithmetic(size)}
