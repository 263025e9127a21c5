"""Streaming modules in the moshi style.

A `StreamingModule` runs offline on whole signals and, inside `with module.streaming(batch):`,
on consecutive chunks with the same code path: each layer keeps the state it needs (past
samples, partial overlap-add sums, attention caches) between calls. Every streaming layer has a
test that chunked output equals offline output.

    with codec.streaming(batch_size=1):
        for frame in frames:            # [1, 1, hop]
            codes = codec.encode(frame)  # [1, K, 1]

Batch rows are independent streams; `restart_rows(rows)` starts new streams in some rows while
the others go on (a server's sessions joining a batch in slots that others left).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from torch import nn


class StreamingModule(nn.Module):
    """Base class: subclasses with state override `init_state(batch_size)` and read
    `self.state` (None when offline)."""

    def __init__(self):
        super().__init__()
        self.state = None

    def init_state(self, batch_size: int):
        """The state at the start of a stream; None for layers without one."""
        return None

    @property
    def is_streaming(self) -> bool:
        return getattr(self, "_streaming", False)

    def _streaming_modules(self):
        return [m for m in self.modules() if isinstance(m, StreamingModule)]

    def start_streaming(self, batch_size: int):
        for module in self._streaming_modules():
            module._streaming = True
            module.state = module.init_state(batch_size)

    def stop_streaming(self):
        for module in self._streaming_modules():
            module._streaming = False
            module.state = None

    @contextmanager
    def streaming(self, batch_size: int = 1):
        """Scope in which calls process consecutive chunks of one stream per batch row."""
        self.start_streaming(batch_size)
        try:
            yield self
        finally:
            self.stop_streaming()

    def reset_streaming(self, batch_size: int | None = None):
        """Start new streams without leaving the streaming scope."""
        for module in self._streaming_modules():
            state = module.state
            size = batch_size if batch_size is not None else getattr(state, "batch_size", 1)
            module.state = module.init_state(size)

    def restart_rows(self, rows):
        """Start new streams in batch rows `rows` (a list of ints) inside the streaming scope;
        the other rows go on. Call it under `torch.inference_mode()` when the states were made
        there (the codec's and LMGen's are)."""
        rows = list(rows)
        if rows:
            for module in self._streaming_modules():
                if module.state is not None:
                    module._restart_rows(rows)

    def _restart_rows(self, rows: list):
        """Default: every per-row tensor of the state (first dim = batch size) takes a fresh
        state's values in those rows; one that a fresh state lacks (None) or shapes otherwise
        is zeroed there. Layers whose state is not per row (positions) override this."""
        state = self.state
        if not dataclasses.is_dataclass(state):
            return
        batch = state.batch_size
        fresh = self.init_state(batch)
        for field in dataclasses.fields(state):
            old, new = getattr(state, field.name), getattr(fresh, field.name)
            if not (isinstance(old, torch.Tensor) and old.dim() and old.shape[0] == batch):
                continue
            index = torch.tensor(rows, device=old.device)
            if isinstance(new, torch.Tensor) and new.shape == old.shape:
                old[index] = new.to(old)[index]
            else:
                old[index] = 0
