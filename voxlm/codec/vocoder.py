"""Harmonic-plus-noise vocoder: the codec decoder's last layer (source-filter synthesis).

Per 10 ms frame a linear head predicts F0, a voicing logit, a log spectral envelope and a log
noise filter on the 321 bins of a 640-point spectrum. The harmonic part is a sum of sines at
k * F0 (k = 1..64, below 0.48 x the sample rate), each with the envelope's amplitude at its
frequency; F0 and the amplitudes ramp linearly across the frame and the phase is accumulated
sample by sample, so the voiced output is periodic by construction. The noise part is a fixed
table of random-phase spectra shaped by the noise filter and overlap-added by the causal iSTFT.

A decoder that predicts free phases per STFT bin (Vocos) must learn coherent phase from the
adversarial losses, which takes far more steps than a CPU gives; here the phase comes from
the F0, and F0 and voicing are learned by regression on YIN targets (`voxlm.pitch`). Training
synthesises with the target F0 and voicing (teacher forcing), inference with the predicted ones.

features [B, T, C] (100 Hz) -> audio [B, T * 160]; streams with state (phase, last frame's F0
and amplitudes, frame counter for the noise table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..modules.conv import CausalISTFT
from ..modules.streaming import StreamingModule

HARMONICS = 64
F0_LOW, F0_HIGH = 50.0, 500.0  # Hz: the predicted F0 is squashed into this range
NOISE_FRAMES = 1024  # frames of random phases in the noise table (10.24 s, then it repeats)
LEVEL_SCALE = 4.0  # log levels are the head's outputs x this: they span about 15 nats, and
# a plain linear head would move them too slowly at the learning rates the rest needs
SYNTH_CHUNK = 256  # frames synthesised at once outside training (bounds memory on long audio)


@dataclass
class VocoderState:
    phase: torch.Tensor  # [B] float64, radians in [0, 2 pi): the fundamental's phase
    f0: torch.Tensor | None  # [B] Hz at the end of the last frame (None before the first)
    amplitudes: torch.Tensor  # [B, K] harmonic amplitudes at the end of the last frame
    frame: int  # frames synthesised so far (indexes the noise table)
    batch_size: int


@dataclass
class Pitch:
    log_f0: torch.Tensor  # [B, T] natural log of F0 in Hz
    voicing_logit: torch.Tensor  # [B, T]


class HarmonicNoiseVocoder(StreamingModule):
    def __init__(self, channels: int, n_fft: int, hop: int, sample_rate: int,
                 harmonics: int = HARMONICS):
        super().__init__()
        self.hop, self.sample_rate, self.harmonics = hop, sample_rate, harmonics
        self.bins = n_fft // 2 + 1
        self.bin_hz = sample_rate / n_fft
        self.head = nn.Linear(channels, 2 + 2 * self.bins)
        with torch.no_grad():  # start quiet: amplitudes e^-4, noise e^-6
            self.head.bias[2: 2 + self.bins] = -4.0 / LEVEL_SCALE
            self.head.bias[2 + self.bins:] = -6.0 / LEVEL_SCALE
        self.istft = CausalISTFT(n_fft, hop)
        phases = torch.rand(NOISE_FRAMES, self.bins, generator=torch.Generator().manual_seed(0))
        self.register_buffer("noise_phase", phases * 2 * math.pi, persistent=False)
        self.register_buffer("orders", torch.arange(1, harmonics + 1, dtype=torch.float32),
                             persistent=False)

    def init_state(self, batch_size: int) -> VocoderState:
        device = self.orders.device
        return VocoderState(torch.zeros(batch_size, dtype=torch.float64, device=device), None,
                            torch.zeros(batch_size, self.harmonics, dtype=self.head.weight.dtype,
                                        device=device), 0, batch_size)

    def predict(self, features: torch.Tensor):
        """features [B, T, C] -> Pitch, envelope [B, T, F], noise filter [B, T, F] (logs)."""
        raw = self.head(features)
        if raw.dtype in (torch.float16, torch.bfloat16):  # synthesis runs in at least float32
            raw = raw.float()
        mid, half = (math.log(F0_HIGH) + math.log(F0_LOW)) / 2, (math.log(F0_HIGH) - math.log(F0_LOW)) / 2
        log_f0 = mid + half * torch.tanh(raw[..., 0])
        levels = raw[..., 2:] * LEVEL_SCALE
        envelope, noise = levels[..., : self.bins], levels[..., self.bins:]
        return Pitch(log_f0, raw[..., 1]), envelope.clamp(max=6.0), noise.clamp(max=6.0)

    def forward(self, features: torch.Tensor, f0_target: torch.Tensor | None = None):
        """features [B, T, C] -> (audio [B, T * hop], Pitch). `f0_target` [B, T] (Hz, 0 where
        unvoiced) replaces the predicted F0 in the synthesis where it is voiced (training)."""
        pitch, envelope, noise = self.predict(features)
        f0 = pitch.log_f0.detach().exp()  # [B, T]; the synthesis does not train the F0 head
        voiced = torch.sigmoid(pitch.voicing_logit.detach())  # nor the voicing head
        if f0_target is not None:
            f0 = torch.where(f0_target > 0, f0_target, f0)
            voiced = (f0_target > 0).to(voiced)
        amplitudes = self._amplitudes(f0, voiced, envelope)
        state = self.state if self.is_streaming else self.init_state(features.shape[0])
        harmonic = self._harmonic(f0, amplitudes, state)  # updates state
        frames = features.shape[1]
        index = (state.frame + torch.arange(frames, device=features.device)) % NOISE_FRAMES
        spectrum = torch.polar(noise.exp(), self.noise_phase[index].to(noise.dtype).expand_as(noise))
        if self.is_streaming:
            noise_audio = self.istft.step(spectrum)
        else:
            noise_audio = self.istft(spectrum.transpose(1, 2))[:, 0]
        state.frame += frames
        return harmonic + noise_audio, pitch

    def _amplitudes(self, f0, voiced, envelope) -> torch.Tensor:
        """f0 [B, T] Hz, voiced [B, T] in [0, 1], envelope [B, T, F] -> amplitudes [B, T, K]:
        the envelope read at each harmonic's frequency (linear interpolation between bins)."""
        freqs = f0[..., None] * self.orders  # [B, T, K]
        position = (freqs / self.bin_hz).clamp(max=self.bins - 1.001)
        low = position.floor().long()
        weight = position - low
        level = envelope.gather(-1, low) * (1 - weight) + envelope.gather(-1, low + 1) * weight
        audible = freqs < 0.48 * self.sample_rate
        return level.exp() * audible * voiced[..., None]

    def _harmonic(self, f0, amplitudes, state: VocoderState) -> torch.Tensor:
        """Sum of harmonics, F0 and amplitudes ramping linearly over each frame from the
        previous frame's values -> [B, T * hop]; advances the state's phase, F0, amplitudes.

        The phase within a frame is the ramp's closed-form integral, so only the T frame-start
        phases are accumulated (in float64, wrapped to [0, 2 pi))."""
        batch, frames = f0.shape
        if not frames:
            return f0.new_zeros(batch, 0)
        dtype, hop = amplitudes.dtype, self.hop
        f0_last = state.f0 if state.f0 is not None else f0[:, 0]
        n = torch.arange(1, hop + 1, dtype=torch.float64, device=f0.device)  # samples 1..hop
        ramp = (n / hop).to(dtype)  # [hop]
        linear, quadratic = n.to(dtype), (n * (n + 1) / (2 * hop)).to(dtype)
        radians = 2 * math.pi / self.sample_rate  # per Hz per sample
        pieces = []
        step = frames if torch.is_grad_enabled() else SYNTH_CHUNK
        for lo in range(0, frames, step):
            cur_f0, cur_amp = f0[:, lo: lo + step], amplitudes[:, lo: lo + step]
            t = cur_f0.shape[1]
            prev_f0 = torch.cat([f0_last[:, None], cur_f0[:, :-1]], 1)
            prev_amp = torch.cat([state.amplitudes[:, None].to(cur_amp), cur_amp[:, :-1]], 1)
            with torch.no_grad():
                rise = cur_f0 - prev_f0  # [B, t]
                advance = (prev_f0.double() * hop + rise.double() * (hop + 1) / 2) * radians
                ends = state.phase[:, None] + torch.cumsum(advance, 1)  # [B, t] float64
                starts = torch.remainder(torch.cat([state.phase[:, None], ends[:, :-1]], 1),
                                         2 * math.pi).to(dtype)
                phase = starts[..., None] + radians * (prev_f0[..., None] * linear
                                                       + rise[..., None] * quadratic)  # [B, t, hop]
                # harmonics above 0.48 x the sample rate at the chunk's lowest F0 are silent
                lowest = float(torch.minimum(cur_f0.min(), prev_f0.min()))
                k = min(self.harmonics, int(0.48 * self.sample_rate / max(lowest, 1.0)) + 1)
                sines = torch.sin(phase[..., None] * self.orders[:k].to(dtype))  # [B, t, hop, k]
            # both ends' amplitudes in one product, then the linear ramp between them
            both = torch.stack([prev_amp[..., :k], cur_amp[..., :k]], -1).view(batch * t, k, 2)
            mixed = torch.bmm(sines.view(batch * t, hop, k), both).view(batch, t, hop, 2)
            pieces.append((mixed[..., 0] * (1 - ramp) + mixed[..., 1] * ramp).flatten(1))
            state.phase = torch.remainder(ends[:, -1], 2 * math.pi)
            f0_last, state.amplitudes = cur_f0[:, -1], cur_amp[:, -1].detach()
        state.f0 = f0_last
        return torch.cat(pieces, 1)
