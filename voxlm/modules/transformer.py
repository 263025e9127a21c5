"""Causal transformer with RoPE, RMSNorm, SDPA and a streaming KV cache.

Offline, position i attends to positions (i - context, i]; streaming keeps the last `context`
keys and values in a preallocated ring buffer, so both paths give the same numbers.
x [B, T, D] -> [B, T, D]. At batch 1 on a CPU a step costs its weight bytes plus a few
microseconds per operation, so the one-frame path is lean: fused qkv, rope on q and k at once
from cached tables, no mask, no re-allocation.
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
        if x.dtype == self.weight.dtype == torch.float32:  # fewer ops, the same numbers
            return x * torch.rsqrt(torch.mean(x * x, -1, keepdim=True) + self.eps) * self.weight
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding. x [B, H, T, Dh], positions [T] (absolute). The reference
    form: layers use `rope_table` + `apply_rope`, the same numbers in fewer operations."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]  # [T, Dh/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def rope_table(length: int, head_dim: int, device, base: float = 10_000.0) -> tuple:
    """cos and signed sin for positions 0..length-1, each [length, 1, 1, Dh] float32, laid out
    so that `apply_rope` gives the numbers of `rope` (halves, not interleaved pairs)."""
    half = head_dim // 2
    freqs = base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=device).float()[:, None] * freqs[None]  # [L, Dh/2]
    cos, sin = angles.cos(), angles.sin()
    shape = (length, 1, 1, head_dim)
    return torch.cat([cos, cos], -1).view(shape), torch.cat([-sin, sin], -1).view(shape)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, N, H, Dh] with cos, sin [T, 1, 1, Dh] from `rope_table`: 3 ops, any N (q and k
    at once). [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]."""
    out = torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin)  # roll: [x2, x1]
    return out if out.dtype == x.dtype else out.to(x.dtype)


@dataclass
class KVCache:
    keys: torch.Tensor | None  # [B, H, context, Dh] ring buffer: position p in slot p % context
    values: torch.Tensor | None  # allocated at the first call, with its dtype and device
    offset: int  # absolute position of the next token
    batch_size: int


class Attention(StreamingModule):
    def __init__(self, dim: int, heads: int, context: int, rope: bool = True):
        super().__init__()
        assert dim % heads == 0
        self.heads, self.context, self.rope = heads, context, rope
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self._rope = None  # (cos, sin) from rope_table, grown on demand; not in the state dict

    def init_state(self, batch_size: int):
        return KVCache(None, None, 0, batch_size)

    def rope_tables(self, length: int, device) -> tuple:
        if self._rope is None or self._rope[0].shape[0] < length or self._rope[0].device != device:
            size = max(length, 2 * self._rope[0].shape[0] if self._rope is not None else 64)
            self._rope = rope_table(size, self.out.in_features // self.heads, device)
        return self._rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, -1)  # [B, T, 3, H, Dh]
        start = self.state.offset if self.is_streaming else 0
        qk = qkv[:, :, :2]
        if self.rope:
            cos, sin = self.rope_tables(start + length, x.device)
            qk = apply_rope(qk, cos[start:start + length], sin[start:start + length])
        q, k = qk.transpose(1, 3).unbind(2)  # [B, H, T, Dh] each
        v = qkv[:, :, 2].transpose(1, 2)
        if self.is_streaming:
            y = self._cached(q, k, v, start, length)
        elif length <= self.context:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            positions = torch.arange(length, device=x.device)
            distance = positions[:, None] - positions[None, :]  # [T, T]
            mask = (distance >= 0) & (distance < self.context)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))

    def _cached(self, q, k, v, start: int, length: int) -> torch.Tensor:
        """Attention over the ring buffer plus the new keys, then store them. [B, H, T, Dh]."""
        state, context = self.state, self.context
        if state.keys is None:
            state.keys = k.new_zeros(k.shape[0], k.shape[1], context, k.shape[3])
            state.values = torch.zeros_like(state.keys)
        state.offset += length
        if length == 1:  # one frame: every stored key is in the window, no mask
            slot = start % context
            state.keys.select(2, slot).copy_(k.select(2, 0))
            state.values.select(2, slot).copy_(v.select(2, 0))
            if start + 1 < context:
                return F.scaled_dot_product_attention(q, state.keys[:, :, :start + 1],
                                                      state.values[:, :, :start + 1])
            return F.scaled_dot_product_attention(q, state.keys, state.values)
        past = min(start, context)  # stored positions start - past .. start - 1, in order:
        shift = start % context if start >= context else 0
        keys = torch.cat([state.keys.roll(-shift, 2)[:, :, :past], k], dim=2)
        values = torch.cat([state.values.roll(-shift, 2)[:, :, :past], v], dim=2)
        positions = torch.arange(start, start + length, device=q.device)
        key_positions = torch.arange(start - past, start + length, device=q.device)
        distance = positions[:, None] - key_positions[None, :]  # [T, L]
        mask = (distance >= 0) & (distance < context)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        kept = min(length, context)
        slots = torch.arange(start + length - kept, start + length, device=q.device) % context
        state.keys[:, :, slots] = k[:, :, length - kept:]
        state.values[:, :, slots] = v[:, :, length - kept:]
        return y


class Block(StreamingModule):
    def __init__(self, dim: int, heads: int, context: int, ff_mult: int = 4, rope: bool = True):
        super().__init__()
        self.attn_norm, self.ff_norm = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, heads, context, rope)
        self.ff_in = nn.Linear(dim, 2 * ff_mult * dim, bias=False)  # SwiGLU: gate and value
        self.ff_out = nn.Linear(ff_mult * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        gate, value = self.ff_in(self.ff_norm(x)).chunk(2, dim=-1)
        return x + self.ff_out(F.silu(gate) * value)


class Transformer(StreamingModule):
    """A stack of causal blocks with a final norm. x [B, T, D] -> [B, T, D]. Without `rope`,
    positions are known only from the inputs (the LM's depth transformer: one table per position).
    """

    def __init__(self, dim: int, layers: int, heads: int, context: int, ff_mult: int = 4,
                 rope: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, context, ff_mult, rope)
                                    for _ in range(layers))
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
