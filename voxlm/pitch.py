"""Pitch (F0) tracking with YIN, numpy only: the codec's pitch targets and the F0 metric."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE

F0_MIN, F0_MAX = 50.0, 500.0  # Hz, the pitch range the tracker searches
F0_HOP = SAMPLE_RATE // 100  # 10 ms frames
F0_WINDOW = 512  # samples (32 ms) integrated per lag; covers the longest period (320 samples)
YIN_THRESHOLD = 0.15  # first dip of the normalised difference below this is the period
YIN_VOICED = 0.35  # a frame whose best dip stays above this is unvoiced
VOICED_FLOOR_DB = 40.0  # frames this far below the loudest frame are unvoiced (silence)
MIN_VOICED_RUN = 3  # frames (30 ms): shorter voiced runs are dropped as unreliable
F0_MEDIAN = 5  # frames: median filter applied to F0 inside each voiced run


def pitch_track(audio, rate: int = SAMPLE_RATE, hop: int = F0_HOP):
    """YIN pitch tracker (de Cheveigné & Kawahara 2002), numpy only.

    Per 10 ms frame: the squared difference function d(tau) over a 32 ms window, normalised by its
    cumulative mean (d'), the first dip below 0.15 (else the deepest dip) refined by a parabola.
    A frame is voiced when that dip is below 0.35, its energy is within 40 dB of the loudest
    frame, and it belongs to a run of at least 3 such frames; F0 is then median-filtered over 5
    frames inside each run. Both steps remove short octave slips: with the small F0 spread of a
    flat TTS voice (std under 10 Hz), one slip can sway a Pearson correlation.
    Returns (f0 [T] in Hz with 0 where unvoiced, voiced [T] bool), T = len(audio) // hop.
    """
    audio = np.asarray(audio, dtype=np.float64).ravel()
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    padded = np.pad(audio, (F0_WINDOW // 2, yin_span(rate)))
    f0, best, energy = yin_frames(
        np.lib.stride_tricks.sliding_window_view(padded, yin_span(rate))[::hop][:n], rate)
    voiced = (best < YIN_VOICED) & (energy > energy.max() - VOICED_FLOOR_DB) & (energy > -70)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    for on, off in zip(edges[::2], edges[1::2]):
        if off - on < MIN_VOICED_RUN:  # runs under 30 ms: onsets, clicks, octave slips
            voiced[on:off] = False
        else:  # median over 5 frames inside the run removes one- and two-frame octave slips
            run = np.pad(f0[on:off], F0_MEDIAN // 2, mode="edge")
            f0[on:off] = np.median(np.lib.stride_tricks.sliding_window_view(run, F0_MEDIAN), axis=1)
    return np.where(voiced, f0, 0.0).astype(np.float32), voiced


def yin_span(rate: int = SAMPLE_RATE) -> int:
    """Samples one tracker frame reads: the 32 ms window and the longest lag after it."""
    return F0_WINDOW + int(np.ceil(rate / F0_MIN)) + 1


def yin_frames(frames: np.ndarray, rate: int = SAMPLE_RATE):
    """frames [T, yin_span] (each starting half a window before its frame's time) -> (F0 [T]
    Hz, the normalised difference's dip [T] (low = periodic), energy [T] dB of the window)."""
    frames = np.asarray(frames, dtype=np.float64)
    n, size = frames.shape
    lag_min = int(rate / F0_MAX)
    lag_max = int(np.ceil(rate / F0_MIN))
    head = frames[:, :F0_WINDOW]  # [T, W]
    nfft = 1 << int(np.ceil(np.log2(size + F0_WINDOW)))
    corr = np.fft.irfft(np.fft.rfft(frames, nfft) * np.conj(np.fft.rfft(head, nfft)),
                        nfft)[:, : lag_max + 1]  # [T, L + 1]: sum_j x_j x_{j + tau}
    squares = np.concatenate([np.zeros((n, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
    lags = np.arange(lag_max + 1)
    shifted = squares[:, lags + F0_WINDOW] - squares[:, lags]  # [T, L + 1]: energy at offset tau
    diff = np.maximum(shifted[:, :1] + shifted - 2.0 * corr, 0.0)  # [T, L + 1]
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cum, 1e-12)

    search = cmnd[:, lag_min: lag_max]  # [T, S]
    is_dip = np.zeros_like(search, dtype=bool)
    is_dip[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = is_dip & (search < YIN_THRESHOLD)
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    tau = first + lag_min  # [T]
    rows = np.arange(n)
    best = cmnd[rows, tau]
    left = cmnd[rows, np.maximum(tau - 1, 1)]
    right = cmnd[rows, np.minimum(tau + 1, lag_max)]
    curve = left - 2 * best + right
    safe = np.where(np.abs(curve) > 1e-12, curve, np.inf)  # flat: no parabolic shift
    offset = 0.5 * (left - right) / safe
    f0 = rate / (tau + np.clip(offset, -1, 1))
    energy = 10 * np.log10(np.mean(head ** 2, axis=1) + 1e-12)
    return f0, best, energy


def pitch_cache_path(corpus, item_id: str):
    return Path(corpus) / "pitch" / f"{item_id}.npy"


def cache_pitch(corpus, rows, progress: bool = True) -> int:
    """YIN F0 per 10 ms frame (Hz, 0 where unvoiced) for every manifest row lacking it: the
    codec's pitch targets. Resumable; each file is written atomically. Returns how many were
    computed."""
    import io

    from tqdm import tqdm

    from .audio import load_audio
    from .data import write_atomic

    todo = [r for r in rows if not pitch_cache_path(corpus, r["id"]).exists()]
    if todo:
        pitch_cache_path(corpus, "x").parent.mkdir(parents=True, exist_ok=True)
    for row in tqdm(todo, desc="pitch", unit="item", disable=not progress):
        f0, _ = pitch_track(load_audio(Path(corpus) / row["audio"]))
        buffer = io.BytesIO()
        np.save(buffer, f0.astype(np.float16))
        write_atomic(pitch_cache_path(corpus, row["id"]), buffer.getvalue())
    return len(todo)


def load_pitch(corpus, item_id: str) -> np.ndarray:
    """[T] F0 in Hz per 10 ms frame (0 = unvoiced), as cached by `cache_pitch`."""
    return np.load(pitch_cache_path(corpus, item_id)).astype(np.float32)
