"""Which codebook carries the words? Linear probes on one codebook's codes at a time.

Word probe:
For every word token of at least MIN_SECONDS (manifest word timings) we take the codes of one
codebook over the word's frames as bags (normalised histograms over the codebook) of its first,
middle and last third, so the order of sounds counts, train a logistic-regression
classifier of the word's identity (the most frequent words) on training speakers and report
its accuracy on speakers it never saw.
Unit probe: each 80 ms frame's GSLM unit (k-means over the teacher states, `voxlm units`; the
unit of the frame's middle state) from the codes of frames t-1, t and t+1 (one-hot), trained
and tested the same way: a phone-like classification over every frame.
Run for codebook 1 (distilled from the semantic teacher) and codebook 2 (the first acoustic
one); chance is the most frequent class's share among the held-out tokens.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio

MIN_SECONDS = 0.25  # words shorter than about 3 frames say little about a codebook
PARTS = 3  # bags per word: first, middle and last third


@dataclass
class ProbeResult:
    codebook: int  # 1-based
    accuracy: float  # on held-out speakers
    chance: float  # most frequent class share on held-out speakers
    words: int  # classes
    train_tokens: int
    test_tokens: int


def word_bags(codes: np.ndarray, word: dict, frame_rate: float, size: int, codebook: int):
    """codes [K, T] -> [PARTS * size]: normalised code histograms of the word's thirds."""
    lo = int(np.floor(word["start"] * frame_rate))
    hi = max(lo + PARTS, int(np.ceil(word["end"] * frame_rate)))
    picked = codes[codebook, lo:hi]
    return np.concatenate([np.bincount(part, minlength=size) / max(1, len(part))
                           for part in np.array_split(picked, PARTS)])


def _fit_and_score(x_train, y_train, x_test, y_test, classes: int, steps: int = 300) -> float:
    torch.manual_seed(0)
    x_train, x_test = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_test, dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    model = torch.nn.Linear(x_train.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x_train * 10), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(x_test * 10).argmax(-1) == y_test).float().mean())


def encode_rows(codec, corpus, rows, progress: bool = True) -> list:
    """[codes [K, T]] for each row, offline."""
    from tqdm import tqdm

    from ..codec.files import encode_audio

    return [encode_audio(codec, load_audio(Path(corpus) / row["audio"]))
            for row in tqdm(rows, desc="probe: encoding", unit="item", disable=not progress)]


def unit_probe(codec, corpus, rows, all_codes: list, units, codebooks=(1, 2)) -> list:
    """-> [ProbeResult] (words = number of unit classes): frame unit from codes at t-1, t, t+1."""
    from ..codec.teacher import TEACHER_RATE, load_teacher_features

    size, per_frame = codec.config.codebook_size, int(TEACHER_RATE / codec.config.frame_rate)
    targets = []
    for row, codes in zip(rows, all_codes):
        ids = units.encode(load_teacher_features(corpus, row["id"]))  # [T50]
        middle = np.arange(codes.shape[1]) * per_frame + per_frame // 2
        targets.append(ids[np.minimum(middle, len(ids) - 1)])
    results = []
    for codebook in codebooks:
        x = {True: [], False: []}
        y = {True: [], False: []}
        for row, codes, target in zip(rows, all_codes, targets):
            c = np.pad(codes[codebook - 1], 1, mode="edge")  # [T + 2]
            for t in range(codes.shape[1]):
                x[row["split"] == "train"].append((c[t], size + c[t + 1], 2 * size + c[t + 2]))
                y[row["split"] == "train"].append(int(target[t]))
        accuracy = _fit_sparse(x[True], y[True], x[False], y[False], 3 * size, units.k)
        chance = Counter(y[False]).most_common(1)[0][1] / len(y[False])
        results.append(ProbeResult(codebook, accuracy, chance, units.k, len(y[True]), len(y[False])))
    return results


def _fit_sparse(x_train, y_train, x_test, y_test, features: int, classes: int,
                steps: int = 300) -> float:
    """Logistic regression on sums of feature embeddings (= linear on one-hot features)."""
    torch.manual_seed(0)
    model = torch.nn.EmbeddingBag(features, classes, mode="sum")
    bias = torch.nn.Parameter(torch.zeros(classes))
    optimizer = torch.optim.Adam([*model.parameters(), bias], lr=0.05)
    xt, yt = torch.tensor(x_train), torch.tensor(y_train)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xt) + bias, yt).backward()
        optimizer.step()
    with torch.no_grad():
        return float(((model(torch.tensor(x_test)) + bias).argmax(-1) == torch.tensor(y_test)).float().mean())


def codebook_probe(codec, corpus, rows, n_words: int = 50, codebooks=(1, 2),
                   progress: bool = True, all_codes: list | None = None) -> list:
    """-> [ProbeResult] per codebook. rows: manifest rows with word timings; training speakers
    are rows with split 'train', the rest are held out."""
    corpus = Path(corpus)
    config = codec.config
    all_codes = all_codes if all_codes is not None else encode_rows(codec, corpus, rows, progress)
    tokens = []  # (word, is_train, codes, word dict)
    for row, codes in zip(rows, all_codes):
        if not row.get("words"):
            continue
        for word in row["words"]:
            name = word["w"].lower().strip(".,!?;:\"'")
            if name and word["end"] - word["start"] >= MIN_SECONDS:
                tokens.append((name, row["split"] == "train", codes, word))
    counts = Counter(name for name, is_train, _, _ in tokens if is_train)
    vocabulary = {w: i for i, (w, _) in enumerate(counts.most_common(n_words))}
    kept = [t for t in tokens if t[0] in vocabulary]
    results = []
    for codebook in codebooks:
        x_train, y_train, x_test, y_test = [], [], [], []
        for name, is_train, codes, word in kept:
            bag = word_bags(codes, word, config.frame_rate, config.codebook_size, codebook - 1)
            (x_train if is_train else x_test).append(bag)
            (y_train if is_train else y_test).append(vocabulary[name])
        if not x_train or not x_test:
            continue
        accuracy = _fit_and_score(np.array(x_train), y_train, np.array(x_test), y_test, len(vocabulary))
        chance = Counter(y_test).most_common(1)[0][1] / len(y_test)
        results.append(ProbeResult(codebook, accuracy, chance, len(vocabulary), len(y_train), len(y_test)))
    return results
