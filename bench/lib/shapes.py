"""Model shapes of the benchmark sizes, without torch (series.py and the synthetic generator need them too).

S and M are trained with torch by scenarios.py (lib/gpt.py); the synthetic sizes (L, and its tiny twin Ltiny
that tests the same code path) are generated with numpy by lib/synth.py: training a billion-parameter model
on 2 CPU cores is out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass

LORA_R, LORA_ALPHA = 8, 16


@dataclass(frozen=True)
class Size:
    d: int
    layers: int
    vocab: int
    ctx: int
    heads: int


SIZES = {
    "S": Size(d=512, layers=8, vocab=8192, ctx=256, heads=8),  # ~34M params
    "M": Size(d=768, layers=12, vocab=50257, ctx=1024, heads=12),  # GPT-2 small shape, untied head: ~163M
}


@dataclass(frozen=True)
class SynthSize:
    """A size lib/synth.py generates: the shape, the shard size of the sharded layout, and the piece size (in
    elements) values are drawn in: part of the definition, since each piece has its own random stream."""

    shape: Size
    shard_bytes: int
    piece: int


SYNTH_SIZES = {
    # ~0.84B params: 1.67 GB bf16 / 3.34 GB fp32 per version (GPT-2 large width, half its depth, untied head)
    "L": SynthSize(Size(d=1536, layers=24, vocab=50257, ctx=1024, heads=16), shard_bytes=500_000_000, piece=1 << 22),
    # the same generator at ~0.33M params, pieces and shards small enough that every path runs several times
    "Ltiny": SynthSize(Size(d=64, layers=4, vocab=1000, ctx=32, heads=4), shard_bytes=200_000, piece=4096),
}
ALL_SIZES = [*SIZES, *SYNTH_SIZES]
