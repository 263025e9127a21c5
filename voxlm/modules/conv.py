"""Causal convolutions, STFT analysis and iSTFT synthesis that stream.

Offline, a causal layer pads its input on the left; streaming, it keeps those past samples
from the previous call instead, so chunked and offline outputs are the same numbers.

Streaming runs channels-last: `step(x [B, T, C])` is the streaming path of each layer (the
codec chains steps without transposes), and `forward(x [B, C, T])` inside a streaming scope
calls it. At a few frames per call the cost is per operation, so the steps use fewer, cheaper
operations than the offline path (a depthwise conv as unfold, multiply, sum; a 1x1 or strided
conv as one matmul) and give the same numbers up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import StreamingModule


@dataclass
class PastSamples:
    past: torch.Tensor  # [B, P, C] inputs kept for the next call (channels-last)
    batch_size: int
    kernel: torch.Tensor | None = None  # a layer's weights laid out for its streaming step


class _CausalWindow(StreamingModule):
    """Shared logic: output i sees inputs [i*stride - pad, i*stride - pad + span)."""

    def __init__(self, channels: int, span: int, stride: int):
        super().__init__()
        assert span >= stride, "a causal window must cover its stride"
        self.channels, self.span, self.stride = channels, span, stride
        self.pad = span - stride

    def init_state(self, batch_size: int):
        return PastSamples(torch.zeros(batch_size, self.pad, self.channels), batch_size)

    def _windowed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: x [B, C, T] -> x padded on the left, the input of the unpadded operator."""
        return F.pad(x, (self.pad, 0))

    def _windowed_step(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming: x [B, T, C] -> the past and x [B, L, C] cut to whole windows (L may be
        below `span`: no output yet); what the next windows need is kept for the next call."""
        past = self.state.past
        if past.shape[1]:
            x = torch.cat([past.to(x), x], dim=1)
        length = x.shape[1]
        n_out = (length - self.span) // self.stride + 1 if length >= self.span else 0
        if n_out * self.stride != length:
            left = x[:, n_out * self.stride:]
            self.state.past = left if past.shape[1] else left.clone()  # never a view of the input
        elif past.shape[1]:  # nothing left over: an empty past (pad 0, whole strides)
            self.state.past = past[:, :0]
        end = (n_out - 1) * self.stride + self.span if n_out else 0
        return x if end == length else x[:, :end]


class CausalConv1d(_CausalWindow):
    """Conv1d whose output i depends only on inputs up to i*stride + stride - 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, (kernel_size - 1) * dilation + 1, stride)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              dilation=dilation, groups=groups, bias=bias)
        self.depthwise = groups == in_channels == out_channels and groups > 1

    def init_state(self, batch_size: int):
        state = super().init_state(batch_size)
        if self.depthwise:  # taps channels-last, [k, C]: the weights as read at the stream start
            state.kernel = self.conv.weight.detach()[:, 0].t().contiguous()
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T] -> [B, Cout, T // stride]
        if self.is_streaming:
            return self.step(x.transpose(1, 2)).transpose(1, 2)
        x = self._windowed_input(x)
        if x.shape[-1] < self.span:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return self.conv(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, Cin] -> [B, T', Cout], streaming
        x = self._windowed_step(x)
        conv = self.conv
        weight, bias, dilation = conv.weight, conv.bias, conv.dilation[0]  # [Cout, Cin/g, k]
        if x.shape[1] < self.span:
            return x.new_zeros(x.shape[0], 0, conv.out_channels)
        if conv.groups == 1 and self.span == 1:  # pointwise: one matmul
            return F.linear(x, weight[:, :, 0], bias)
        if self.depthwise:  # sum over the taps of window * kernel, channels innermost
            kernel = weight[:, 0].t() if torch.is_grad_enabled() else self.state.kernel  # [k, C]
            if x.shape[1] == self.span:  # one output: the input is its window
                windows = x[:, None, ::dilation]  # [B, 1, k, C]
            else:
                windows = x.unfold(1, self.span, self.stride).transpose(2, 3)[:, :, ::dilation]
            y = (windows * kernel).sum(2)  # [B, T', C]
            return y if bias is None else y + bias
        if conv.groups == 1:  # [B, T', Cin * k] @ [Cin * k, Cout]
            windows = x.unfold(1, self.span, self.stride)[..., ::dilation]  # [B, T', Cin, k]
            return F.linear(windows.flatten(2), weight.flatten(1), bias)
        return conv(x.transpose(1, 2)).transpose(1, 2)  # other groupings: the plain conv


class Upsample(nn.Module):
    """Transposed convolution with kernel = stride: each input frame makes `stride` output
    frames from itself alone, so it needs no streaming state."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T] -> [B, Cout, T * stride]
        return self.conv(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, Cin] -> [B, T * stride, Cout]
        batch, frames, _ = x.shape
        weight, bias = self.conv.weight, self.conv.bias  # [Cin, Cout, k], [Cout]
        _, out_channels, k = weight.shape
        y = torch.matmul(x, weight.flatten(1)).view(batch, frames, out_channels, k)
        y = (y + bias[:, None]).transpose(2, 3)  # [B, T, k, Cout]
        return y.reshape(batch, frames * k, out_channels)


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
        if self.is_streaming:
            return self.step(x[:, 0]).transpose(1, 2)
        return self._spectrum(self._windowed_input(x)[:, 0]).transpose(1, 2)

    def step(self, x: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, T, F], streaming
        return self._spectrum(self._windowed_step(x[..., None])[..., 0])

    def _spectrum(self, x: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, T, F]
        if x.shape[-1] < self.n_fft:
            return x.new_zeros(x.shape[0], 0, self.n_fft // 2 + 1)
        frames = x.unfold(-1, self.n_fft, self.hop) * self.window  # [B, T, n_fft]
        magnitude = torch.fft.rfft(frames if frames.dtype == torch.float64 else frames.float(),
                                    dim=-1).abs()
        return torch.log(magnitude + 1e-5)


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
        self.register_buffer("synthesis", self.window * self.gain, persistent=False)
        self._ola_index = (0, torch.zeros(0, dtype=torch.long))  # (frames, index) of the last call

    def init_state(self, batch_size: int):
        return OverlapTail(torch.zeros(batch_size, self.n_fft - self.hop), batch_size)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            return self.step(spec.transpose(1, 2))[:, None]
        batch, _, frames = spec.shape
        keep = self.n_fft - self.hop
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]  # [B, n_fft, T]
        length = (frames - 1) * self.hop + self.n_fft
        out = F.fold(chunks, (1, length), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0] if frames \
            else chunks.new_zeros(batch, keep)
        return (out * self.gain)[:, None, : frames * self.hop]

    def step(self, spec: torch.Tensor) -> torch.Tensor:  # [B, T, F] complex -> [B, T * hop]
        batch, frames, _ = spec.shape
        tail = self.state.tail
        if not frames:
            return tail.new_zeros(batch, 0)
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.synthesis  # [B, T, n_fft]
        # overlap-add onto the tail: chunk t lands on samples [t*hop, t*hop + n_fft)
        out = F.pad(tail.to(chunks), (0, frames * self.hop))  # [B, (T - 1) * hop + n_fft]
        out.index_add_(1, self._index(frames, chunks.device), chunks.view(batch, -1))
        self.state.tail = out[:, frames * self.hop:]
        return out[:, : frames * self.hop]

    def _index(self, frames: int, device) -> torch.Tensor:
        """[T * n_fft] where each sample of `frames` chunks lands in the overlap-add output."""
        if self._ola_index[0] != frames or self._ola_index[1].device != device:
            index = torch.arange(frames, device=device)[:, None] * self.hop
            self._ola_index = (frames, (index + torch.arange(self.n_fft, device=device)).view(-1))
        return self._ola_index[1]
