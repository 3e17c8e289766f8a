"""The GPT-style model the scenarios of bench/scenarios.py train, and the LoRA wrapper they add."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shapes import LORA_ALPHA, LORA_R, SIZES, Size  # noqa: F401 - re-exported for scenarios.py


class Attention(nn.Module):
    def __init__(self, s: Size) -> None:
        super().__init__()
        self.heads = s.heads
        self.qkv = nn.Linear(s.d, 3 * s.d)
        self.proj = nn.Linear(s.d, s.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, s: Size) -> None:
        super().__init__()
        self.fc = nn.Linear(s.d, 4 * s.d)
        self.proj = nn.Linear(4 * s.d, s.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, s: Size) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(s.d)
        self.attn = Attention(s)
        self.ln2 = nn.LayerNorm(s.d)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, s: Size) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(s.vocab, s.d)
        self.pos_emb = nn.Embedding(s.ctx, s.d)
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.layers))
        self.ln_f = nn.LayerNorm(s.d)
        self.lm_head = nn.Linear(s.d, s.vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B·A (PEFT's parameter names)."""

    def __init__(self, base: nn.Linear, gen: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, LORA_R, bias=False)
        self.lora_B = nn.Linear(LORA_R, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5**0.5, generator=gen)
        nn.init.zeros_(self.lora_B.weight)  # so the adapter starts as a no-op, as in PEFT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * (LORA_ALPHA / LORA_R)


def init_gpt(s: Size, seed: int) -> GPT:
    """GPT-2 initialisation (normal 0.02): gives the normal-like weights the entropy figures assume."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = GPT(s)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model
