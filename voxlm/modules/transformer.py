"""Causal transformer with RoPE, RMSNorm, SDPA and a streaming KV cache.

Offline, position i attends to positions (i - context, i]; streaming keeps the last `context`
keys and values, so both paths give the same numbers. x [B, T, D] -> [B, T, D].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import StreamingModule


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding. x [B, H, T, Dh], positions [T] (absolute)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]  # [T, Dh/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


@dataclass
class KVCache:
    keys: torch.Tensor  # [B, H, L, Dh], the last `context` positions at most
    values: torch.Tensor
    offset: int  # absolute position of the next token
    batch_size: int


class Attention(StreamingModule):
    def __init__(self, dim: int, heads: int, context: int):
        super().__init__()
        assert dim % heads == 0
        self.heads, self.context = heads, context
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int):
        head_dim = self.out.in_features // self.heads
        empty = torch.zeros(batch_size, self.heads, 0, head_dim)
        return KVCache(empty, empty.clone(), 0, batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        start = self.state.offset if self.is_streaming else 0
        positions = torch.arange(start, start + length, device=x.device)
        q, k = rope(q, positions), rope(k, positions)
        if self.is_streaming:
            k = torch.cat([self.state.keys.to(k), k], dim=2)
            v = torch.cat([self.state.values.to(v), v], dim=2)
            self.state.keys = k[:, :, -self.context:]
            self.state.values = v[:, :, -self.context:]
            self.state.offset += length
        key_positions = torch.arange(start + length - k.shape[2], start + length, device=x.device)
        distance = positions[:, None] - key_positions[None, :]  # [T, L]
        mask = (distance >= 0) & (distance < self.context)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class Block(StreamingModule):
    def __init__(self, dim: int, heads: int, context: int, ff_mult: int = 4):
        super().__init__()
        self.attn_norm, self.ff_norm = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, heads, context)
        self.ff_in = nn.Linear(dim, 2 * ff_mult * dim, bias=False)  # SwiGLU: gate and value
        self.ff_out = nn.Linear(ff_mult * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        gate, value = self.ff_in(self.ff_norm(x)).chunk(2, dim=-1)
        return x + self.ff_out(F.silu(gate) * value)


class Transformer(StreamingModule):
    """A stack of causal blocks with a final norm. x [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, layers: int, heads: int, context: int, ff_mult: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, context, ff_mult) for _ in range(layers))
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
