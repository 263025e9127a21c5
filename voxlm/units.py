"""Discrete speech units, GSLM style: k-means over the semantic teacher's states (Whisper tiny.en
encoder, 50 Hz, codec/teacher.py), one unit per 20 ms frame, runs collapsed for unit LMs.

    units = fit_units([features, ...], k=100)       # features: [T, 384] float32 each
    ids = units.encode(features)                    # [T] int64 in [0, k)
    values, durations = dedup(ids)                  # [N], [N]: 5 5 5 9 9 -> (5, 9), (3, 2)
    units.save("units.npz"); units = Units.load("units.npz")

Corpus level (the `voxlm units fit|encode` commands):
    fit_units_for_corpus(corpus, "units.npz", k=100)        # train split, teacher states cached
    encode_corpus(corpus, "units.npz", "units.jsonl")       # {"id", "units", "durations"} per row

`abx_score` is an ABX-style check of how well units keep word identity across voices, using the
manifest's word timings. It is not the ZeroSpeech ABX (phone triphones, their item files and
scorer): it only compares numbers within this project.

Position: Whisper adds absolute position embeddings, and the final states keep them (in our
synthetic corpus frame position explains about a third of the states' variance, speaker about
1 %), so plain k-means groups frames partly by where they sit in the 30 s window. `fit_units`
therefore learns the mean state at each window position and subtracts it before clustering and
assignment (`remove_position=True`): on held-out voices this took the word ABX of 100 units from
0.59 to 0.93 (and of the states themselves from 0.84 to 0.97).
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .codec.teacher import MAX_SECONDS, TEACHER_RATE
from .errors import VoxlmError

UNITS_FORMAT = 1  # bump when the file layout changes; load() refuses other versions
UNIT_RATE = TEACHER_RATE  # 50 Hz: one unit per teacher state (16 kHz / 320 samples)
WINDOW_FRAMES = int(MAX_SECONDS * TEACHER_RATE)  # 1500: the teacher restarts positions every 30 s
POSITION_PRIOR = 20.0  # frames of the global mean blended into each position's mean (shrinkage)
KMEANS_ITERS = 20
MAX_POINTS_PER_CENTROID = 256  # faiss subsamples to k * 256 frames (25 600 for k = 100)


@dataclass
class Units:
    """k-means codebook over teacher states, with the positional component they subtract first."""

    centroids: np.ndarray  # [k, D] float32 (D = 384), in position-removed space
    position_mean: np.ndarray | None = None  # [P, D] mean state at window positions 0..P-1
    frame_mean: np.ndarray | None = None  # [D] mean state, used for positions >= P
    meta: dict = field(default_factory=dict)  # what was fit: feature, rate, frames, seed, ...

    def __post_init__(self):
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        if self.centroids.ndim != 2 or len(self.centroids) < 2:
            raise VoxlmError(f"units need centroids [k >= 2, D], got shape {self.centroids.shape}")
        if (self.position_mean is None) != (self.frame_mean is None):
            raise VoxlmError("units need both position_mean and frame_mean, or neither")
        if self.position_mean is not None:
            self.position_mean = np.asarray(self.position_mean, dtype=np.float32)
            self.frame_mean = np.asarray(self.frame_mean, dtype=np.float32)
            if self.position_mean.shape[1:] != (self.dim,) or self.frame_mean.shape != (self.dim,):
                raise VoxlmError(f"position means {self.position_mean.shape} / "
                                 f"{self.frame_mean.shape} do not match centroids of dimension "
                                 f"{self.dim}")
        self._sq = (self.centroids.astype(np.float64) ** 2).sum(1)  # [k] squared norms

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def normalize(self, features: np.ndarray, start: int = 0) -> np.ndarray:
        """features [T, D] -> [T, D] with each frame's position mean removed. start: the index
        of features[0] in its utterance (positions restart every WINDOW_FRAMES)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise VoxlmError(f"features of shape {features.shape} do not match units fit on "
                             f"dimension {self.dim}; pass teacher states [T, {self.dim}]")
        if self.position_mean is None:
            return features
        pos = (start + np.arange(len(features))) % WINDOW_FRAMES  # [T]
        means = np.where((pos < len(self.position_mean))[:, None],
                         self.position_mean[np.minimum(pos, len(self.position_mean) - 1)],
                         self.frame_mean[None, :])  # [T, D]
        return features - means

    def encode(self, features: np.ndarray, start: int = 0, chunk: int = 4096) -> np.ndarray:
        """features [T, D] (frames start.. of an utterance) -> [T] int64 nearest centroid
        (squared L2 after normalize, as k-means assigned)."""
        features = self.normalize(features, start)
        out = np.empty(len(features), dtype=np.int64)
        for start in range(0, len(features), chunk):
            x = features[start:start + chunk].astype(np.float64)  # [t, D]
            dist = self._sq[None, :] - 2.0 * x @ self.centroids.T.astype(np.float64)  # [t, k]
            out[start:start + chunk] = dist.argmin(1)
        return out

    def save(self, path) -> Path:
        """Write an npz (centroids, position means, format version, meta json) atomically."""
        from .data import write_atomic

        empty = np.zeros((0, self.dim), np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, centroids=self.centroids, format=np.int64(UNITS_FORMAT),
                 position_mean=empty if self.position_mean is None else self.position_mean,
                 frame_mean=np.zeros(0, np.float32) if self.frame_mean is None else self.frame_mean,
                 meta=np.array(json.dumps(self.meta)))
        return write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path) -> "Units":
        path = Path(path)
        fix = f"fit units with `voxlm units fit --data CORPUS --out {path}`"
        if not path.is_file():
            raise VoxlmError(f"{path}: no such units file; {fix}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                version = int(npz["format"])
                if version != UNITS_FORMAT:
                    raise VoxlmError(f"{path}: units format {version}, this voxlm reads "
                                     f"{UNITS_FORMAT}; {fix}")
                centroids = npz["centroids"]
                position_mean, frame_mean = npz["position_mean"], npz["frame_mean"]
                meta = json.loads(str(npz["meta"]))
        except VoxlmError:
            raise
        except Exception as exc:  # OSError, ValueError, KeyError, zipfile.BadZipFile, ...
            raise VoxlmError(f"{path}: not a readable units file ({type(exc).__name__}: "
                             f"{str(exc)[:80]}); {fix}") from None
        if centroids.ndim != 2 or centroids.dtype != np.float32 or \
                centroids.shape[0] != meta.get("k", centroids.shape[0]) or \
                not np.isfinite(centroids).all():
            raise VoxlmError(f"{path}: centroids {centroids.dtype} {centroids.shape} do not match "
                             f"the file's own header (k={meta.get('k')}); {fix}")
        if len(position_mean) == 0:
            position_mean = frame_mean = None
        try:
            return cls(centroids, position_mean, frame_mean, meta)
        except VoxlmError as exc:
            raise VoxlmError(f"{path}: {exc}; {fix}") from None


class Runs(NamedTuple):
    values: np.ndarray  # [N] int64: the unit of each run
    durations: np.ndarray  # [N] int64: frames in each run (>= 1); sum = T


def dedup(units) -> Runs:
    """Run-length deduplication: [T] unit ids -> Runs(values [N], durations [N])."""
    units = np.asarray(units).reshape(-1)
    if len(units) == 0:
        return Runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    starts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1]]))  # [N]
    durations = np.diff(np.concatenate([starts, [len(units)]]))
    return Runs(units[starts].astype(np.int64), durations.astype(np.int64))


def position_means(features) -> tuple:
    """Mean state at each window position over utterances starting at position 0, each shrunk
    toward the global mean by POSITION_PRIOR frames -> ([P, D] float32, [D] float32)."""
    dim = features[0].shape[1]
    n_pos = min(WINDOW_FRAMES, max(len(f) for f in features))
    sums, counts = np.zeros((n_pos, dim)), np.zeros(n_pos)  # [P, D], [P]
    total, frames = np.zeros(dim), 0
    for f in features:
        pos = np.arange(len(f)) % WINDOW_FRAMES
        keep = pos < n_pos
        np.add.at(sums, pos[keep], f[keep])
        np.add.at(counts, pos[keep], 1)
        total, frames = total + f.sum(0), frames + len(f)
    mean = total / frames
    shrunk = (sums + POSITION_PRIOR * mean) / (counts + POSITION_PRIOR)[:, None]
    return shrunk.astype(np.float32), mean.astype(np.float32)


def fit_units(features, k: int = 100, seed: int = 0, iters: int = KMEANS_ITERS,
              remove_position: bool = True, meta: dict | None = None) -> Units:
    """k-means (faiss, Euclidean, not spherical) over the frames of `features`, a list of
    whole-utterance [T, D] arrays (each starting at window position 0). With remove_position the
    per-position mean state is learned and subtracted first (see the module docstring). faiss
    subsamples to k * 256 frames; threads follow OMP_NUM_THREADS."""
    try:
        import faiss
    except ImportError:
        raise VoxlmError("faiss is not installed; pip install faiss-cpu") from None
    features = [np.asarray(f, np.float32) for f in features]
    frames = np.concatenate(features) if features else np.zeros((0, 0), np.float32)  # [N, D]
    if frames.ndim != 2 or len(frames) < k:
        raise VoxlmError(f"k-means with k={k} needs at least {k} frames, got {len(frames)} "
                         f"(shape {frames.shape}); use more audio or a smaller --k")
    position_mean = frame_mean = None
    if remove_position:
        position_mean, frame_mean = position_means(features)
        plain = Units(np.zeros((2, frames.shape[1]), np.float32), position_mean, frame_mean)
        frames = np.concatenate([plain.normalize(f) for f in features])
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    kmeans = faiss.Kmeans(frames.shape[1], k, niter=iters, seed=seed, spherical=False,
                          verbose=False, max_points_per_centroid=MAX_POINTS_PER_CENTROID)
    kmeans.train(frames)
    info = {"k": k, "dim": int(frames.shape[1]), "seed": seed, "iters": iters,
            "frames": int(len(frames)), "rate_hz": UNIT_RATE, "remove_position": remove_position,
            "feature": "whisper tiny.en encoder states (voxlm.codec.teacher)"}
    return Units(kmeans.centroids.reshape(k, -1), position_mean, frame_mean,
                 {**info, **(meta or {})})


def _rows(corpus) -> list:
    from .data import read_manifest

    return read_manifest(Path(corpus) / "manifest.jsonl")


def fit_units_for_corpus(corpus_dir, out_path, k: int = 100, max_items: int | None = 2000,
                         progress: bool = True, seed: int = 0, threads: int = 1,
                         remove_position: bool = True) -> Units:
    """Fit units on the train split of a corpus (at most max_items rows, a seeded sample),
    caching teacher states first; writes out_path (npz) and returns the Units."""
    from .codec.teacher import cache_teacher_features, load_teacher_features

    rows = [r for r in _rows(corpus_dir) if r["split"] == "train"]
    if not rows:
        raise VoxlmError(f"{corpus_dir}: no train rows in the manifest; units are fit on train")
    if max_items and len(rows) > max_items:
        pick = np.random.default_rng(seed).choice(len(rows), max_items, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    cache_teacher_features(corpus_dir, rows, threads=threads, progress=progress)
    features = [load_teacher_features(corpus_dir, r["id"]) for r in rows]  # [T, 384] each
    units = fit_units(features, k=k, seed=seed, remove_position=remove_position,
                      meta={"corpus": str(corpus_dir), "items": len(rows)})
    units.save(out_path)
    return units


def encode_corpus(corpus_dir, units_path, out_path, progress: bool = True,
                  threads: int = 1) -> int:
    """Encode every manifest row to deduplicated units; writes a JSONL of
    {"id", "units": [N], "durations": [N] (frames at 50 Hz)} atomically; returns the row count."""
    from tqdm import tqdm

    from .codec.teacher import cache_teacher_features, load_teacher_features
    from .data import write_atomic

    units = Units.load(units_path)
    rows = _rows(corpus_dir)
    cache_teacher_features(corpus_dir, rows, threads=threads, progress=progress)
    lines = []
    for row in tqdm(rows, desc="units", unit="item", disable=not progress):
        runs = dedup(units.encode(load_teacher_features(corpus_dir, row["id"])))
        lines.append(json.dumps({"id": row["id"], "units": runs.values.tolist(),
                                 "durations": runs.durations.tolist()}) + "\n")
    write_atomic(out_path, "".join(lines))
    return len(rows)


# ----------------------------------------------------------------------------- ABX-style check

class Token(NamedTuple):
    word: str  # normalised word type
    speaker: str
    features: np.ndarray  # [t, D] teacher states over the word
    start: int  # index of features[0] in its utterance (its window position)


class AbxResult(NamedTuple):
    units: float  # fraction of triplets with d(A, X) < d(B, X), DTW over unit one-hots
    centroids: float  # the same, DTW over each frame's centroid vector (cosine)
    features: float  # the same, DTW over raw teacher states (cosine)
    normalized: float  # the same, DTW over the states with the units' position mean removed
    triplets: int
    word_types: int
    speakers: int


def dtw_distance(cost: np.ndarray) -> float:
    """Symmetric DTW (Sakoe-Chiba, diagonal steps weigh 2) over a frame cost [N, M], normalised
    by N + M so words of different lengths compare: the mean frame cost along the best path."""
    n, m = cost.shape
    cost = cost.astype(np.float64)
    acc = np.cumsum(cost[0]) + cost[0, 0]  # row 0: (0, 0) enters with weight 2
    for i in range(1, n):
        entry = np.minimum(acc + cost[i], np.concatenate([[np.inf], acc[:-1] + 2 * cost[i, 1:]]))
        run = np.cumsum(cost[i])  # then any run of steps to the right, weight 1 each
        acc = np.minimum.accumulate(entry - run) + run
    return float(acc[-1] / (n + m))


def _cosine_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-8)
    return 1.0 - a @ b.T  # [N, M]


def _word_type(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def word_tokens(corpus_dir, rows, min_frames: int = 8, max_frames: int = 75) -> list:
    """Cut teacher states at the manifest's word timings: [Token] for words 0.16 to 1.5 s long."""
    from .codec.teacher import load_teacher_features

    tokens = []
    for row in rows:
        states = load_teacher_features(corpus_dir, row["id"])  # [T50, D]
        for w in row["words"]:
            a, b = int(np.floor(w["start"] * UNIT_RATE)), int(np.ceil(w["end"] * UNIT_RATE))
            word = _word_type(w["w"])
            if word and min_frames <= b - a <= max_frames and b <= len(states):
                tokens.append(Token(word, row["speaker"], states[a:b], a))
    return tokens


def sample_triplets(tokens: list, max_triplets: int = 2000, per_type: int = 20,
                    length_tolerance: float = 0.25, seed: int = 0) -> list:
    """(a, b, x) token indices: A and X the same word type from different speakers; B another
    word type within +-25 % of X's length, spoken by A's speaker when one fits (else any speaker
    but X's), so neither speaker nor length tells A from B."""
    rng = np.random.default_rng(seed)
    by_type: dict = {}
    for n, t in enumerate(tokens):
        by_type.setdefault(t.word, []).append(n)
    lengths = np.array([len(t.features) for t in tokens])
    speakers = np.array([t.speaker for t in tokens])
    words = np.array([t.word for t in tokens])
    triplets = []
    for word in sorted(by_type):
        xs = by_type[word]
        if len({speakers[n] for n in xs}) < 2:
            continue
        for x in rng.permutation(xs)[:per_type]:
            a_pool = [n for n in xs if speakers[n] != speakers[x]]
            a = int(rng.choice(a_pool))
            near = (words != word) & (np.abs(lengths - lengths[x]) <= length_tolerance * lengths[x])
            b_pool = np.flatnonzero(near & (speakers == speakers[a]))
            if len(b_pool) == 0:
                b_pool = np.flatnonzero(near & (speakers != speakers[x]))
            if len(b_pool):
                triplets.append((a, int(rng.choice(b_pool)), int(x)))
    order = rng.permutation(len(triplets))[:max_triplets]
    return [triplets[i] for i in order]


def abx_score(corpus_dir, units: Units, rows, max_triplets: int = 2000, seed: int = 0,
              threads: int = 1, progress: bool = False) -> AbxResult:
    """ABX-style word discrimination across speakers (see sample_triplets for the triplets): the
    fraction of triplets where d(A, X) < d(B, X), ties counting half; 0.5 is chance, 1 perfect.
    Scored four ways over the same triplets: unit ids (frame cost 0 if equal, 1 if not), the
    units' centroid vectors (cosine), the raw teacher states (cosine) and the states as the units
    see them (position mean removed, cosine), all by dtw_distance.
    An ABX-style check for comparing unit sets here, not the ZeroSpeech ABX."""
    from .codec.teacher import cache_teacher_features

    cache_teacher_features(corpus_dir, rows, threads=threads, progress=progress)
    tokens = word_tokens(corpus_dir, rows)
    triplets = sample_triplets(tokens, max_triplets=max_triplets, seed=seed)
    if not triplets:
        raise VoxlmError(f"{corpus_dir}: no ABX triplets in {len(rows)} rows; the check needs the "
                         "same words spoken by at least two speakers")
    ids = [units.encode(t.features, t.start) for t in tokens]  # [t] each
    normalized = [units.normalize(t.features, t.start) for t in tokens]  # [t, D] each

    def cost(kind: str, p: int, q: int) -> np.ndarray:  # [len p, len q] frame distances
        if kind == "units":
            return (ids[p][:, None] != ids[q][None, :]).astype(np.float64)
        if kind == "centroids":
            return _cosine_cost(units.centroids[ids[p]], units.centroids[ids[q]])
        if kind == "normalized":
            return _cosine_cost(normalized[p], normalized[q])
        return _cosine_cost(tokens[p].features, tokens[q].features)

    scores = []
    for kind in ("units", "centroids", "features", "normalized"):
        wins = 0.0
        for a, b, x in triplets:
            d_ax, d_bx = dtw_distance(cost(kind, a, x)), dtw_distance(cost(kind, b, x))
            wins += 1.0 if d_ax < d_bx else 0.5 if d_ax == d_bx else 0.0
        scores.append(wins / len(triplets))
    used = {n for t in triplets for n in t}
    return AbxResult(*scores, triplets=len(triplets),
                     word_types=len({tokens[n].word for n in used}),
                     speakers=len({tokens[n].speaker for n in used}))
