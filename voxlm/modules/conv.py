"""Causal convolutions, STFT analysis and iSTFT synthesis that stream.

Offline, a causal layer pads its input on the left; streaming, it keeps those past samples
from the previous call instead, so chunked and offline outputs are the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import StreamingModule


@dataclass
class PastSamples:
    past: torch.Tensor  # [B, C, P] inputs kept for the next call
    batch_size: int


class _CausalWindow(StreamingModule):
    """Shared logic: output i sees inputs [i*stride - pad, i*stride - pad + span)."""

    def __init__(self, channels: int, span: int, stride: int):
        super().__init__()
        assert span >= stride, "a causal window must cover its stride"
        self.channels, self.span, self.stride = channels, span, stride
        self.pad = span - stride

    def init_state(self, batch_size: int):
        past = torch.zeros(batch_size, self.channels, self.pad)
        return PastSamples(past, batch_size)

    def _windowed_input(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> the input to run the unpadded operator on."""
        if not self.is_streaming:
            return F.pad(x, (self.pad, 0))
        x = torch.cat([self.state.past.to(x), x], dim=-1)
        n_out = (x.shape[-1] - self.span) // self.stride + 1 if x.shape[-1] >= self.span else 0
        self.state.past = x[..., n_out * self.stride:]
        return x[..., : (n_out - 1) * self.stride + self.span] if n_out else x[..., :0]


class CausalConv1d(_CausalWindow):
    """Conv1d whose output i depends only on inputs up to i*stride + stride - 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, (kernel_size - 1) * dilation + 1, stride)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              dilation=dilation, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T] -> [B, Cout, T // stride]
        x = self._windowed_input(x)
        if x.shape[-1] < self.span:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return self.conv(x)


class Upsample(nn.Module):
    """Transposed convolution with kernel = stride: each input frame makes `stride` output
    frames from itself alone, so it needs no streaming state."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T] -> [B, Cout, T * stride]
        return self.conv(x)


def hann(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True)


class CausalSTFT(_CausalWindow):
    """Log-magnitude spectrum of the last `n_fft` samples every `hop` samples.

    [B, 1, T] -> [B, n_fft // 2 + 1, T // hop]; frame t ends at sample (t + 1) * hop."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__(1, n_fft, hop)
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._windowed_input(x)[:, 0]  # [B, L]
        if x.shape[-1] < self.n_fft:
            return x.new_zeros(x.shape[0], self.n_fft // 2 + 1, 0)
        frames = x.unfold(-1, self.n_fft, self.hop) * self.window  # [B, T, n_fft]
        magnitude = torch.fft.rfft(frames.float(), dim=-1).abs()
        return torch.log(magnitude + 1e-5).transpose(1, 2)


@dataclass
class OverlapTail:
    tail: torch.Tensor  # [B, n_fft - hop] partial sums owed to the next samples
    batch_size: int


class CausalISTFT(StreamingModule):
    """Inverse STFT by overlap-add where frame t completes samples [t*hop, (t+1)*hop).

    Frame t's window spans the `n_fft` samples that start at t*hop: its head completes the
    current samples (the earlier frames' tails are already summed there) and its tail carries
    over to the next frames, so the output lags nothing beyond the frame itself.
    spec [B, F, T] complex -> audio [B, 1, T * hop]."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)
        self.gain = hop / self.window.sum().item()  # Hann at 75% overlap sums to n_fft / 2 / hop

    def init_state(self, batch_size: int):
        return OverlapTail(torch.zeros(batch_size, self.n_fft - self.hop), batch_size)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, frames = spec.shape
        keep = self.n_fft - self.hop
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]  # [B, n_fft, T]
        length = (frames - 1) * self.hop + self.n_fft
        out = F.fold(chunks, (1, length), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0] if frames \
            else chunks.new_zeros(batch, keep)
        out = out * self.gain
        if self.is_streaming:
            out = torch.cat([out[:, :keep] + self.state.tail.to(out), out[:, keep:]], dim=-1)
            self.state.tail = out[:, frames * self.hop:]
        return out[:, None, : frames * self.hop]
