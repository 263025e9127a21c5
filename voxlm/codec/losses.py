"""Reconstruction, adversarial and distillation losses for codec training.

Mel filterbanks are built here (no torchaudio): triangular filters on the HTK mel scale.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import SAMPLE_RATE


def hz_to_mel(hz):
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters, each normalised to unit area (Slaney)."""
    f_max = f_max or sample_rate / 2
    mels = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                          dtype=torch.float64)
    edges = mel_to_hz(mels)  # [n_mels + 2]
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (center - lower)
    falling = (upper - bins[None]) / (upper - center)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    filters *= (2.0 / (upper - lower))  # equal area
    return filters.float()


def magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """audio [B, N] -> |STFT| [B, n_fft // 2 + 1, frames] (Hann window, centred)."""
    window = torch.hann_window(n_fft, device=audio.device)
    return torch.stft(audio.float(), n_fft, hop, window=window, return_complex=True).abs()


def log_mel(audio: torch.Tensor, n_fft: int, n_mels: int, hop: int | None = None) -> torch.Tensor:
    """audio [B, N] -> log-mel [B, n_mels, frames]."""
    mag = magnitude(audio, n_fft, hop or n_fft // 4)
    mel = mel_filterbank(n_fft, n_mels).to(mag.device) @ mag
    return torch.log(mel.clamp(min=1e-5))


class MultiScaleMelLoss(nn.Module):
    """L1 between log-mel spectrograms at several window sizes (DAC-style scales)."""

    def __init__(self, scales=((128, 16), (256, 32), (512, 64), (1024, 128), (2048, 256))):
        super().__init__()
        self.scales = scales  # (n_fft, n_mels)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:  # [B, N] each
        total = 0.0
        for n_fft, n_mels in self.scales:
            total = total + F.l1_loss(log_mel(fake, n_fft, n_mels), log_mel(real, n_fft, n_mels))
        return total / len(self.scales)


class MultiResolutionSTFTLoss(nn.Module):
    """Linear-frequency magnitudes at several resolutions: L1 of log magnitudes plus spectral
    convergence (DDSP, Parallel WaveGAN). Unlike mel bands, a 1024-point spectrum resolves the
    harmonics of a voice at every frequency, so noise between harmonics costs here."""

    def __init__(self, sizes=(512, 1024, 2048), floor: float = 1e-4):
        super().__init__()
        self.sizes, self.floor = sizes, floor

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:  # [B, N] each
        total = 0.0
        for n_fft in self.sizes:
            a, b = magnitude(fake, n_fft, n_fft // 4), magnitude(real, n_fft, n_fft // 4)
            log_l1 = F.l1_loss(torch.log(a + self.floor), torch.log(b + self.floor))
            convergence = (torch.linalg.norm((a - b).flatten(1), dim=1)  # per example, so that
                           / torch.linalg.norm(b.flatten(1), dim=1).clamp(min=1e-6)).mean()  # DDP = 1 process
            total = total + log_l1 + convergence
        return total / len(self.sizes)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per frame, averaged. student, teacher [B, T, D]."""
    frames = min(student.shape[1], teacher.shape[1])
    return 1 - F.cosine_similarity(student[:, :frames], teacher[:, :frames], dim=-1).mean()


def discriminator_loss(real_scores, fake_scores) -> torch.Tensor:
    """Least-squares GAN: real -> 1, fake -> 0. Lists of score tensors, one per discriminator."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2)
               for r, f in zip(real_scores, fake_scores)) / len(real_scores)


def generator_loss(fake_scores) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f in fake_scores) / len(fake_scores)


def feature_matching_loss(real_features, fake_features) -> torch.Tensor:
    """Mean L1 between discriminator activations, each layer and example relative to the real
    activation's magnitude (per example, so the loss is a mean over the batch, as DDP needs)."""
    total, count = 0.0, 0
    for real_layers, fake_layers in zip(real_features, fake_features):
        for real, fake in zip(real_layers, fake_layers):
            real = real.detach()
            error = (fake - real).abs().flatten(1).mean(1)
            total = total + (error / (real.abs().flatten(1).mean(1) + 1e-5)).mean()
            count += 1
    return total / count
