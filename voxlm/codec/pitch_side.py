"""The input's pitch sent beside the codes: a 0.35 kbps side channel for the harmonic decoder.

The harmonic-plus-noise decoder reads F0 from the codes, and that F0 is its largest error: off
by a median 55-60 cents, enough to put the upper harmonics between the input's (docs/
BENCHMARKS.md, "Encoder retrained to carry F0"). Decoded with the input's own F0 the same codes
score far higher PESQ. This module measures that F0 at the encoder and quantises it:

    per codec frame (80 ms), 4 slots of 20 ms, each 7 bits: 0 = unvoiced, 1..127 = log F0 on
    an even grid over 50..500 Hz (31.6 cents a step, at most 16 cents off)
    -> 28 bits a frame, 0.35 kbps at 12.5 Hz

The tracker is `voxlm.pitch`'s YIN with two changes that make it stream: a frame's energy is
compared with the loudest frame so far (not of the whole file), and the voiced-run and median
filters look 2 frames (20 ms) either side. A frame's F0 needs 56 ms of audio after the frame's
end, so the streaming encoder gives frame k's pitch with frame k + 1's audio: decoding with
pitch adds one frame (80 ms) of latency. Offline and frame-by-frame output are the same.

    audio [N] -> PitchEncoder.step(...) / pitch_codes(audio) -> codes [SLOTS, T] int
    codes [B, SLOTS, T] -> pitch_f0(codes, per_frame) -> F0 [B, T * per_frame] Hz (0 unvoiced)
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..pitch import (F0_HOP, F0_WINDOW, MIN_VOICED_RUN, VOICED_FLOOR_DB, YIN_VOICED,
                     yin_frames, yin_span)

SLOTS = 4  # pitch values per codec frame (20 ms each at 12.5 Hz)
BITS = 7  # per slot: code 0 = unvoiced, 1..127 = log F0
LEVELS = 2 ** BITS - 1  # voiced levels
PITCH_LOW, PITCH_HIGH = 50.0, 500.0  # Hz, the grid's ends
SETTLE = 2  # tracker frames either side the voiced-run and median filters read
assert MIN_VOICED_RUN == 3  # the run filter below is written for runs of at least 3 frames


def pitch_kbps(frame_rate: float) -> float:
    return SLOTS * BITS * frame_rate / 1000


def quantize_f0(f0: np.ndarray) -> np.ndarray:
    """F0 [...] Hz (0 = unvoiced) -> codes [...] int16 in 0..127."""
    f0 = np.asarray(f0, dtype=np.float64)
    low, high = math.log(PITCH_LOW), math.log(PITCH_HIGH)
    level = np.round((np.log(np.clip(f0, PITCH_LOW, PITCH_HIGH)) - low) / (high - low) * (LEVELS - 1))
    return np.where(f0 > 0, level + 1, 0).astype(np.int16)


def dequantize_f0(codes) -> torch.Tensor:
    """codes [...] in 0..127 -> F0 [...] float32 Hz, 0 where unvoiced."""
    codes = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
    low, high = math.log(PITCH_LOW), math.log(PITCH_HIGH)
    f0 = torch.exp(low + (codes - 1).clamp(min=0) / (LEVELS - 1) * (high - low))
    return torch.where(codes > 0, f0, torch.zeros_like(f0))


def pitch_f0(codes, per_frame: int) -> torch.Tensor:
    """codes [B, SLOTS, T] -> F0 [B, T * per_frame] Hz for the decoder's 10 ms frames (each
    slot's value held over its per_frame / SLOTS frames)."""
    f0 = dequantize_f0(codes)  # [B, S, T]
    batch, slots, frames = f0.shape
    if slots != SLOTS:
        raise ValueError(f"pitch codes have {slots} slots a frame, expected {SLOTS}")
    return f0.transpose(1, 2).repeat_interleave(per_frame // SLOTS, dim=-1).reshape(batch, -1)


def _settle(f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Raw YIN frames [n] -> settled F0 [n - 2 * SETTLE] (0 unvoiced) of the frames with SETTLE
    frames either side: voiced runs under 3 frames dropped, then a 5-frame median inside the run
    (the run's edge value standing in past its ends), as `voxlm.pitch.pitch_track` does."""
    n = len(f0)
    mid = np.arange(SETTLE, n - SETTLE)
    left = np.ones(len(mid), dtype=np.int64)  # voiced frames in a row ending at each (<= 3)
    right = np.ones(len(mid), dtype=np.int64)
    for o in (1, 2):
        left += (left == o) & voiced[mid - o]
        right += (right == o) & voiced[mid + o]
    kept = voiced[mid] & (left + right - 1 >= MIN_VOICED_RUN)
    offsets = np.arange(-SETTLE, SETTLE + 1)
    lo, hi = mid - (left - 1), mid + (right - 1)  # the run's ends inside the window
    where = np.clip(mid[:, None] + offsets, lo[:, None], hi[:, None])
    return np.where(kept, np.median(f0[where], axis=1), 0.0)


class PitchEncoder:
    """Frame-by-frame pitch codes of one stream of audio. `step(audio)` takes any number of
    samples and returns the codes [SLOTS, m] of the codec frames now complete (a frame's codes
    come once 56 ms of the next frame's audio are in); `flush()` returns the rest, as if the
    audio went on in silence."""

    def __init__(self, hop: int, rate: int = SAMPLE_RATE):
        if hop % (F0_HOP * SLOTS):
            raise ValueError(f"a codec frame of {hop} samples does not split into {SLOTS} slots")
        self.hop, self.rate = hop, rate
        self.per_frame = hop // F0_HOP  # tracker frames per codec frame
        self.span = yin_span(rate)
        self.audio = np.zeros(F0_WINDOW // 2)  # tracker frame j starts at j * F0_HOP - W / 2
        self.audio_start = -F0_WINDOW // 2  # sample index of self.audio[0]
        self.f0 = np.zeros(SETTLE)  # raw frames from -SETTLE on (those before 0 unvoiced)
        self.voiced = np.zeros(SETTLE, dtype=bool)
        self.raw_start = -SETTLE  # tracker frame of self.f0[0]
        self.loudest = -np.inf
        self.samples = 0  # audio samples taken
        self.emitted = 0  # codec frames whose codes were returned

    def step(self, audio) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float64).ravel()
        self.audio = np.concatenate([self.audio, audio])
        self.samples += len(audio)
        return self._emit(self.samples // self.hop)

    def flush(self) -> np.ndarray:
        frames = -(-self.samples // self.hop)
        tail = frames * self.hop - self.samples + self.hop  # to the frame's end, then silence
        self.audio = np.concatenate([self.audio, np.zeros(tail)])
        return self._emit(frames)

    def _emit(self, frames: int) -> np.ndarray:
        self._track()
        # codec frame k (decoder frames 8k..8k+7) reads tracker frames 8k+1..8k+8, settled
        last_raw = self.raw_start + len(self.f0) - 1
        ready = min(frames, (last_raw - SETTLE - self.per_frame) // self.per_frame + 1)
        if ready <= self.emitted:
            return np.zeros((SLOTS, 0), dtype=np.int16)
        first = self.emitted * self.per_frame + 1  # tracker frames [first, first + count)
        count = (ready - self.emitted) * self.per_frame
        lo = first - SETTLE - self.raw_start
        f0 = _settle(self.f0[lo: lo + count + 2 * SETTLE], self.voiced[lo: lo + count + 2 * SETTLE])
        slots = f0.reshape(-1, SLOTS, self.per_frame // SLOTS)  # [m, S, frames per slot]
        voiced = slots > 0
        mean = slots.sum(-1) / np.maximum(voiced.sum(-1), 1)  # of the voiced frames in a slot
        codes = quantize_f0(np.where(voiced.any(-1), mean, 0.0)).T  # [S, m]
        self.emitted = ready
        keep = self.emitted * self.per_frame + 1 - SETTLE - self.raw_start  # still to settle
        self.f0, self.voiced, self.raw_start = self.f0[keep:], self.voiced[keep:], self.raw_start + keep
        return np.ascontiguousarray(codes)

    def _track(self) -> None:
        """YIN on every tracker frame whose samples are all in."""
        next_frame = self.raw_start + len(self.f0)
        end = self.audio_start + len(self.audio)
        count = (end - self.span + F0_WINDOW // 2) // F0_HOP - next_frame + 1
        if count <= 0:
            return
        offset = next_frame * F0_HOP - F0_WINDOW // 2 - self.audio_start
        windows = np.lib.stride_tricks.sliding_window_view(
            self.audio[offset: offset + (count - 1) * F0_HOP + self.span], self.span)[::F0_HOP]
        f0, best, energy = yin_frames(windows, self.rate)
        loudest = np.maximum.accumulate(np.concatenate([[self.loudest], energy]))[1:]
        self.loudest = loudest[-1]
        voiced = (best < YIN_VOICED) & (energy > loudest - VOICED_FLOOR_DB) & (energy > -70)
        self.f0 = np.concatenate([self.f0, f0])
        self.voiced = np.concatenate([self.voiced, voiced])
        drop = offset + count * F0_HOP  # the next tracker frame's first sample
        self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop


def pitch_codes(audio, hop: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """audio [N] -> pitch codes [SLOTS, ceil(N / hop)] int16, as the streaming encoder gives them."""
    encoder = PitchEncoder(hop, rate)
    return np.concatenate([encoder.step(audio), encoder.flush()], axis=1)
