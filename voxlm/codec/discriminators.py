"""Multi-period (HiFi-GAN) and multi-resolution STFT discriminators, small for CPU training.

Each discriminator returns (score [B, ...], features: list of activations) for feature matching.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _leaky(x):
    return F.leaky_relu(x, 0.1)


class PeriodDiscriminator(nn.Module):
    """Folds audio [B, 1, N] into [B, 1, N / p, p] and runs 2-D convs along time."""

    def __init__(self, period: int, channels=(8, 16, 32, 64)):
        super().__init__()
        self.period = period
        layers, previous = [], 1
        for i, width in enumerate(channels):
            stride = (3, 1) if i < len(channels) - 1 else (1, 1)
            layers.append(weight_norm(nn.Conv2d(previous, width, (5, 1), stride, padding=(2, 0))))
            previous = width
        self.layers = nn.ModuleList(layers)
        self.score = weight_norm(nn.Conv2d(previous, 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor):
        batch, _, length = audio.shape
        if length % self.period:
            audio = F.pad(audio, (0, self.period - length % self.period), mode="reflect")
        x = audio.view(batch, 1, -1, self.period)
        features = []
        for layer in self.layers:
            x = _leaky(layer(x))
            features.append(x)
        return self.score(x), features


class SpectrogramDiscriminator(nn.Module):
    """2-D convs over the log-magnitude STFT [B, 1, frames, bins] at one resolution."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft = n_fft
        self.layers = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.score = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor):
        window = torch.hann_window(self.n_fft, device=audio.device)
        spec = torch.stft(audio[:, 0].float(), self.n_fft, self.n_fft // 4, window=window,
                          return_complex=True).abs()
        x = torch.log(spec.clamp(min=1e-5)).transpose(1, 2)[:, None]  # [B, 1, frames, bins]
        features = []
        for layer in self.layers:
            x = _leaky(layer(x))
            features.append(x)
        return self.score(x), features


class Discriminators(nn.Module):
    """All discriminators; returns lists of scores and of feature lists."""

    def __init__(self, periods=(2, 3, 5, 7, 11), resolutions=(256, 512, 1024)):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods]
            + [SpectrogramDiscriminator(n) for n in resolutions])

    def forward(self, audio: torch.Tensor):  # [B, 1, N]
        scores, features = [], []
        for discriminator in self.discriminators:
            score, feats = discriminator(audio)
            scores.append(score)
            features.append(feats)
        return scores, features
