"""Word timings for engines that do not report them: DTW against an eSpeak NG rendering.

eSpeak NG gives exact word positions (see espeak.py), so we speak the same text with it, compare
both signals frame by frame on normalised log-mel features, find the cheapest monotonic alignment
(dynamic time warping) and carry each word's start and end across it. Boundaries next to a pause
are then snapped to the pause edge found in the target audio. This is the approach of aeneas,
written small.
"""
from __future__ import annotations

import numpy as np

from ..audio import SAMPLE_RATE

HOP = 160  # samples, 10 ms frames
WINDOW = 400  # samples, 25 ms
N_MELS = 40
SILENCE_DB = -40.0  # frame energy below the utterance's loudest frame minus this is a pause
SNAP_SECONDS = 0.12  # how far a boundary may move to reach a pause edge


def _mel_filterbank(n_fft: int = 512, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular mel filters [n_mels, n_fft // 2 + 1] over 0..8 kHz."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(50.0), mel(SAMPLE_RATE / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))


def frames(audio: np.ndarray) -> np.ndarray:
    """Frame a signal into [N, WINDOW] with HOP stride, N = len // HOP (zero padded)."""
    n = max(1, len(audio) // HOP)
    padded = np.pad(audio.astype(np.float32), (WINDOW // 2, WINDOW + n * HOP))
    idx = np.arange(n)[:, None] * HOP + np.arange(WINDOW)[None, :]
    return padded[idx]


def frame_db(audio: np.ndarray) -> np.ndarray:
    """Energy per 10 ms frame (non-overlapping, so pause edges stay sharp) in dB: [N]."""
    n = max(1, len(audio) // HOP)
    block = np.pad(audio.astype(np.float32), (0, max(0, n * HOP - len(audio))))[: n * HOP]
    return 10 * np.log10(np.mean(np.square(block.reshape(n, HOP)), axis=1) + 1e-10)


def features(audio: np.ndarray) -> np.ndarray:
    """Mean/variance-normalised log-mel features [N, N_MELS] with their deltas: [N, 2 * N_MELS]."""
    spec = np.abs(np.fft.rfft(frames(audio) * np.hanning(WINDOW), n=512)) ** 2
    logmel = np.log(spec @ _mel_filterbank().T + 1e-8)
    logmel = (logmel - logmel.mean(0)) / (logmel.std(0) + 1e-5)
    delta = np.gradient(logmel, axis=0)
    return np.concatenate([logmel, delta], axis=1).astype(np.float32)


def dtw_path(cost: np.ndarray):
    """Cheapest monotonic path through cost [N, M] from (0, 0) to (N-1, M-1); returns (i, j)."""
    n, m = cost.shape
    acc = np.empty((n, m), dtype=np.float64)
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        # a step into row i comes diagonally or from above; then any run of steps to the right
        entry = np.minimum(acc[i - 1], np.concatenate([[np.inf], acc[i - 1, :-1]])) + cost[i]
        run = np.cumsum(cost[i])
        acc[i] = np.minimum.accumulate(entry - run) + run
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        options = []
        if i > 0 and j > 0:
            options.append((acc[i - 1, j - 1], i - 1, j - 1))
        if i > 0:
            options.append((acc[i - 1, j], i - 1, j))
        if j > 0:
            options.append((acc[i, j - 1], i, j - 1))
        _, i, j = min(options)
        path.append((i, j))
    path.reverse()
    return np.array([p[0] for p in path]), np.array([p[1] for p in path])


def speech_mask(audio: np.ndarray) -> np.ndarray:
    """Speech frames: bool [N] over 10 ms frames, within -SILENCE_DB of the loudest frame."""
    db = frame_db(audio)
    return db > db.max() + SILENCE_DB


def mask_runs(mask: np.ndarray) -> list:
    """[(first, end)] frame index runs of True in a bool array [N]."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


def speech_runs(audio: np.ndarray):
    """[(start_s, end_s)] of speech, pauses shorter than 60 ms bridged."""
    runs = []
    for start, end in mask_runs(speech_mask(audio)):
        if runs and start - runs[-1][1] < 6:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return [(s * HOP / SAMPLE_RATE, e * HOP / SAMPLE_RATE) for s, e in runs]


def snap_to_pauses(words: list, audio: np.ndarray) -> list:
    """Fit word boundaries to the pauses of `audio`:
    1. starts/ends within SNAP_SECONDS of a speech onset/offset move onto it;
    2. a speech run's (>= 50 ms) onset that no word covers becomes the start of the next word
       (DTW tends to start a word late after a pause); an uncovered offset becomes the end of
       the word before it;
    3. words do not overlap, and each is tightened to its first and last speech frame."""
    runs = [r for r in speech_runs(audio) if r[1] - r[0] >= 0.05]
    if not runs or not words:
        return words
    onsets = np.array([r[0] for r in runs])
    offsets = np.array([r[1] for r in runs])
    starts = np.array([w.start for w in words], dtype=float)
    ends = np.array([w.end for w in words], dtype=float)
    for k in range(len(words)):
        near = int(np.argmin(np.abs(onsets - starts[k])))
        if abs(onsets[near] - starts[k]) <= SNAP_SECONDS:
            starts[k] = onsets[near]
        near = int(np.argmin(np.abs(offsets - ends[k])))
        if abs(offsets[near] - ends[k]) <= SNAP_SECONDS:
            ends[k] = offsets[near]
    for on, off in runs:  # every run's onset and offset belongs to some word
        if not np.any((starts <= on + 0.02) & (ends > on)):
            later = np.nonzero(starts > on)[0]
            if len(later) and starts[later[0]] - off < 0.5:
                starts[later[0]] = on
        if not np.any((starts < off) & (ends >= off - 0.02)):
            earlier = np.nonzero(ends < off)[0]
            if len(earlier) and on - ends[earlier[-1]] < 0.5:
                ends[earlier[-1]] = off
    ends[:-1] = np.minimum(ends[:-1], np.maximum(starts[1:], starts[:-1] + 0.01))
    out = [type(w)(w.w, float(a), float(max(b, a + 0.01))) for w, a, b in zip(words, starts, ends)]
    return tighten(out, audio)


def tighten(words: list, audio: np.ndarray) -> list:
    """Move each word's start forward to its first speech frame and its end back to its last."""
    active = speech_mask(audio)
    frame_s = HOP / SAMPLE_RATE
    out = []
    for w in words:
        f0, f1 = int(round(w.start / frame_s)), max(int(round(w.end / frame_s)), int(round(w.start / frame_s)) + 1)
        on = np.nonzero(active[f0:f1])[0]
        start, end = ((f0 + on[0]) * frame_s, (f0 + on[-1] + 1) * frame_s) if len(on) else (w.start, w.end)
        out.append(type(w)(w.w, round(float(start), 3), round(float(end), 3)))
    return out


def transfer_timings(reference: np.ndarray, ref_words: list, target: np.ndarray) -> list:
    """Carry word timings from `reference` audio onto `target` audio (same text), 16 kHz both."""
    a, b = features(reference), features(target)
    a_n = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    b_n = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-8)
    cost = 1.0 - a_n @ b_n.T  # [N_ref, N_target] cosine distance
    ref_idx, tgt_idx = dtw_path(cost)
    first = np.full(len(a), len(b) - 1)
    last = np.zeros(len(a), dtype=int)
    np.minimum.at(first, ref_idx, tgt_idx)
    np.maximum.at(last, ref_idx, tgt_idx)
    frame_s = HOP / SAMPLE_RATE
    out = []
    for w in ref_words:
        s = min(int(w.start / frame_s), len(a) - 1)
        e = min(max(int(np.ceil(w.end / frame_s)) - 1, s), len(a) - 1)
        out.append(type(w)(w.w, float(first[s] * frame_s), float((last[e] + 1) * frame_s)))
    return snap_to_pauses(out, target)
