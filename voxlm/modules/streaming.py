"""Streaming modules in the moshi style.

A `StreamingModule` runs offline on whole signals and, inside `with module.streaming(batch):`,
on consecutive chunks with the same code path: each layer keeps the state it needs (past
samples, partial overlap-add sums, attention caches) between calls. Every streaming layer has a
test that chunked output equals offline output.

    with codec.streaming(batch_size=1):
        for frame in frames:            # [1, 1, hop]
            codes = codec.encode(frame)  # [1, K, 1]
"""
from __future__ import annotations

from contextlib import contextmanager

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
