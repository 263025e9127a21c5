"""Causal transformer with RoPE, RMSNorm, SDPA and a streaming KV cache.

Offline, position i attends to positions (i - context, i]; streaming keeps the last `context`
keys and values in a preallocated ring buffer, so both paths give the same numbers.
x [B, T, D] -> [B, T, D]. At batch 1 on a CPU a step costs its weight bytes plus a few
microseconds per operation, so the one-frame path is lean: fused qkv, rope on q and k at once
from cached tables, no mask, no re-allocation.

Batched streams that start at different times (the dialogue runtime's sessions joining and
leaving a batch): `restart_rows(rows)` begins new streams in some batch rows while the others go
on. Those rows then count their rope positions from 0 again and attend only to keys stored since
their restart, so a row gives the numbers of a stream of its own (up to float rounding).

`BlockConfig` holds the options a pretrained text LM's layers need to load exactly (Llama,
Qwen 3, Gemma 3: grouped-query attention, q/k norms, sandwich norms, GeGLU, sliding-window
layers with their own rope base); its defaults are voxlm's own block.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial

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
        wide = torch.float64 if torch.float64 in (x.dtype, self.weight.dtype) else torch.float32
        x32 = x.to(wide)  # half precision inputs are normalised in float32
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.to(wide)).to(x.dtype)


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


@dataclass
class BlockConfig:
    """Block options beyond width and heads. Defaults: voxlm's block (SwiGLU, pre-norms only)."""
    head_dim: int = 0  # per attention head; 0: dim // heads
    kv_heads: int = 0  # key/value heads, grouped-query attention when < heads; 0: heads
    ff_dim: int = 0  # gated MLP hidden width; 0: ff_mult * dim
    activation: str = "silu"  # gate activation: silu (SwiGLU) or gelu_tanh (GeGLU, Gemma)
    qk_norm: bool = False  # RMSNorm over each query and key head before rope (Qwen 3, Gemma 3)
    post_norms: bool = False  # RMSNorm on attention and MLP outputs before the residual (Gemma)
    norm_eps: float = 1e-6
    attn_scale: float = 0.0  # softmax scale of q.k; 0: 1 / sqrt(head_dim)
    rope_base: float = 10_000.0  # rope base of global layers
    sliding_window: int = 0  # local layers attend to this many last positions; 0: none local
    global_every: int = 0  # with a window, layers n-1, 2n-1, ... stay global (Gemma 3: 6); 0: none
    local_rope_base: float = 10_000.0  # rope base of local layers (Gemma 3: 10k, global 1M)

    def is_local(self, layer: int) -> bool:
        every = self.global_every
        return self.sliding_window > 0 and not (every and (layer + 1) % every == 0)


ACTIVATIONS = {"silu": F.silu, "gelu_tanh": partial(F.gelu, approximate="tanh")}
SHORT_KEYS = 32  # keys at most: bf16 attention on a CPU runs in float32 (`Attention._attend`)


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
    row_starts: list | None = None  # absolute position each row's stream began (restart_rows);
    # None: every row at 0. Python ints, so sizing tables and masks needs no device sync
    row_start: torch.Tensor | None = None  # [B] the same on the device, rebuilt after a restart


class Attention(StreamingModule):
    """Causal self-attention over the last `context` positions. `kv_heads` < `heads`: grouped
    queries share key/value heads; `qk_norm`: RMSNorm over each query and key head."""

    def __init__(self, dim: int, heads: int, context: int, rope: bool = True, kv_heads: int = 0,
                 head_dim: int = 0, qk_norm: bool = False, rope_base: float = 10_000.0,
                 scale: float = 0.0, eps: float = 1e-6):
        super().__init__()
        assert head_dim or dim % heads == 0
        kv_heads, head_dim = kv_heads or heads, head_dim or dim // heads
        assert heads % kv_heads == 0, f"{heads} query heads cannot share {kv_heads} kv heads"
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.context, self.rope, self.rope_base = context, rope, rope_base
        self.scale = scale or None  # None: SDPA's 1 / sqrt(head_dim)
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, bias=False)  # [q; k; v]
        self.out = nn.Linear(heads * head_dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self._rope = None  # (cos, sin) from rope_table, grown on demand; not in the state dict

    def init_state(self, batch_size: int):
        return KVCache(None, None, 0, batch_size)

    def _restart_rows(self, rows):
        """Rows `rows` begin new streams at the next position (see the module docstring)."""
        state = self.state
        if state.row_starts is None:
            state.row_starts = [0] * state.batch_size
        for row in rows:
            state.row_starts[row] = state.offset
        state.row_start = None  # rebuilt on the device at the next call

    def _row_start(self, device) -> torch.Tensor | None:
        """[B] start positions of the rows' streams, or None when every row began at 0."""
        state = self.state
        if state.row_starts is None:
            return None
        if state.row_start is None or state.row_start.device != device:
            state.row_start = torch.tensor(state.row_starts, dtype=torch.long, device=device)
        return state.row_start

    def rope_tables(self, length: int, device) -> tuple:
        if self._rope is None or self._rope[0].shape[0] < length or self._rope[0].device != device:
            size = max(length, 2 * self._rope[0].shape[0] if self._rope is not None else 64)
            self._rope = rope_table(size, self.head_dim, device, self.rope_base)
        return self._rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        heads, kv_heads = self.heads, self.kv_heads
        qkv = self.qkv(x).view(batch, length, heads + 2 * kv_heads, -1)  # [B, T, H + 2 Hkv, Dh]
        start = self.state.offset if self.is_streaming else 0
        row_start = self._row_start(x.device) if self.is_streaming else None  # [B] or None
        qk = qkv[:, :, :heads + kv_heads]
        if self.q_norm is not None:
            qk = torch.cat([self.q_norm(qk[:, :, :heads]), self.k_norm(qk[:, :, heads:])], 2)
        if self.rope and row_start is None:  # q and k at once: [B, T, 1, H + Hkv, Dh]
            cos, sin = self.rope_tables(start + length, x.device)
            qk = apply_rope(qk[:, :, None], cos[start:start + length], sin[start:start + length])
            qk = qk[:, :, 0]
        elif self.rope:  # each row at its own position: tables gathered to [B, T, 1, 1, Dh]
            cos, sin = self.rope_tables(start - min(self.state.row_starts) + length, x.device)
            index = (start - row_start)[:, None] + torch.arange(length, device=x.device)  # [B, T]
            qk = apply_rope(qk[:, :, None], cos[index], sin[index])[:, :, 0]
        q = qk[:, :, :heads].transpose(1, 2)  # [B, H, T, Dh]
        k = qk[:, :, heads:].transpose(1, 2)  # [B, Hkv, T, Dh]
        v = qkv[:, :, heads + kv_heads:].transpose(1, 2)
        if self.is_streaming:
            y = self._cached(q, k, v, start, length, row_start)
        elif length <= self.context:
            y = self._attend(q, k, v, is_causal=True)
        else:
            positions = torch.arange(length, device=x.device)
            distance = positions[:, None] - positions[None, :]  # [T, T]
            mask = (distance >= 0) & (distance < self.context)
            y = self._attend(q, k, v, attn_mask=mask)  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, length, heads * self.head_dim))

    def _attend(self, q, k, v, **mask) -> torch.Tensor:
        """SDPA, q [B, H, T, Dh], k and v [B, Hkv, L, Dh] -> [B, H, T, Dh].

        bf16 on a CPU with short keys (the depth transformer's 1 + n_q positions over thousands
        of frames) runs in float32: torch's CPU flash kernel takes 6.7x as long in bf16 there
        (backward included; benchmarks/lm_throughput.py --dtype both), a third of a bf16
        training step before this."""
        dtype = q.dtype
        widen = dtype == torch.bfloat16 and q.device.type == "cpu" and k.shape[2] <= SHORT_KEYS
        if widen:
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if widen else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale,
                                               enable_gqa=self.kv_heads != self.heads, **mask)
        return y.to(dtype)

    def _cached(self, q, k, v, start: int, length: int, row_start=None) -> torch.Tensor:
        """Attention over the ring buffer plus the new keys, then store them. [B, H, T, Dh].
        row_start [B] (restarted rows): keys stored before a row's start are masked for it."""
        state, context = self.state, self.context
        if state.keys is None:
            state.keys = k.new_zeros(k.shape[0], k.shape[1], context, k.shape[3])
            state.values = torch.zeros_like(state.keys)
        state.offset += length
        if length == 1:  # one frame: every stored key is in the window, no mask
            slot = start % context
            state.keys.select(2, slot).copy_(k.select(2, 0))
            state.values.select(2, slot).copy_(v.select(2, 0))
            stored = min(start + 1, context)
            keys, values = state.keys[:, :, :stored], state.values[:, :, :stored]
            if row_start is None or max(state.row_starts) <= start + 1 - stored:
                return self._attend(q, keys, values)
            slots = torch.arange(stored, device=q.device)  # the position each slot holds:
            positions = start - torch.remainder(start - slots, context)  # [L]
            mask = positions[None] >= row_start[:, None]  # [B, L]
            return self._attend(q, keys, values, attn_mask=mask[:, None, None])
        past = min(start, context)  # stored positions start - past .. start - 1, in order:
        shift = start % context if start >= context else 0
        keys = torch.cat([state.keys.roll(-shift, 2)[:, :, :past], k], dim=2)
        values = torch.cat([state.values.roll(-shift, 2)[:, :, :past], v], dim=2)
        positions = torch.arange(start, start + length, device=q.device)
        key_positions = torch.arange(start - past, start + length, device=q.device)
        distance = positions[:, None] - key_positions[None, :]  # [T, L]
        mask = (distance >= 0) & (distance < context)
        if row_start is not None:  # [B, 1, T, L]: and nothing from before the row's start
            mask = mask & (key_positions >= row_start[:, None])[:, None, None]
        y = self._attend(q, keys, values, attn_mask=mask)
        kept = min(length, context)
        slots = torch.arange(start + length - kept, start + length, device=q.device) % context
        state.keys[:, :, slots] = k[:, :, length - kept:]
        state.values[:, :, slots] = v[:, :, length - kept:]
        return y


class Block(StreamingModule):
    """Pre-norm attention and gated MLP; with `post_norms` each output is normed again before
    the residual add (Gemma). x [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, heads: int, context: int, ff_mult: int = 4, rope: bool = True,
                 options: BlockConfig | None = None, local: bool = False, dropout: float = 0.0):
        super().__init__()
        o = options or BlockConfig()
        self.dropout = nn.Dropout(dropout)  # on each branch before the residual add (training)
        self.attn_norm, self.ff_norm = RMSNorm(dim, o.norm_eps), RMSNorm(dim, o.norm_eps)
        self.attn = Attention(dim, heads, min(context, o.sliding_window) if local else context,
                              rope, o.kv_heads, o.head_dim, o.qk_norm,
                              o.local_rope_base if local else o.rope_base, o.attn_scale, o.norm_eps)
        hidden = o.ff_dim or ff_mult * dim
        self.ff_in = nn.Linear(dim, 2 * hidden, bias=False)  # gated MLP: gate and value
        self.ff_out = nn.Linear(hidden, dim, bias=False)
        if o.activation not in ACTIVATIONS:
            raise ValueError(f"activation {o.activation!r}: choose one of {sorted(ACTIVATIONS)}")
        self.activation = ACTIVATIONS[o.activation]
        self.attn_post_norm = RMSNorm(dim, o.norm_eps) if o.post_norms else None
        self.ff_post_norm = RMSNorm(dim, o.norm_eps) if o.post_norms else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.attn_norm(x))
        x = x + self.dropout(y if self.attn_post_norm is None else self.attn_post_norm(y))
        gate, value = self.ff_in(self.ff_norm(x)).chunk(2, dim=-1)
        y = self.ff_out(self.activation(gate) * value)
        return x + self.dropout(y if self.ff_post_norm is None else self.ff_post_norm(y))


class Transformer(StreamingModule):
    """A stack of causal blocks with a final norm. x [B, T, D] -> [B, T, D]. Without `rope`,
    positions are known only from the inputs (the LM's depth transformer: one table per position).
    `options` (BlockConfig) sets the layout of every block and which layers are local;
    `dropout` drops out each block's branches in training mode (nanoGPT's residual dropout).
    """

    def __init__(self, dim: int, layers: int, heads: int, context: int, ff_mult: int = 4,
                 rope: bool = True, options: BlockConfig | None = None, dropout: float = 0.0):
        super().__init__()
        o = options or BlockConfig()
        self.blocks = nn.ModuleList(Block(dim, heads, context, ff_mult, rope, o, o.is_local(i),
                                          dropout)
                                    for i in range(layers))
        self.norm = RMSNorm(dim, o.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
