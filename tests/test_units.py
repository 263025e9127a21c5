"""GSLM-style units on real speech: eSpeak voices -> Whisper teacher states -> k-means units."""
import json

import numpy as np
import pytest

from voxlm.errors import VoxlmError
from voxlm.units import Units, abx_score, dedup, dtw_distance, encode_corpus, fit_units, \
    fit_units_for_corpus

TEXTS = ("Seven yellow windows opened slowly.",
         "Bright morning sunshine painted the garden.",
         "Purple elephants wandered across the valley.")
VOICES = ("espeak:en-us+m1", "espeak:en-us+f2", "espeak:en+m3", "espeak:en-gb-scotland+m4")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, engines):
    """A four-voice corpus folder (wav + manifest + cached teacher states) and its features."""
    from voxlm.audio import save_audio
    from voxlm.codec.teacher import cache_teacher_features, load_teacher_features
    from voxlm.data import write_manifest

    root = tmp_path_factory.mktemp("units_corpus")
    espeak, rows = engines("espeak"), []
    for v, voice in enumerate(VOICES):
        for t, text in enumerate(TEXTS):
            speech = espeak.speak(text, voice)
            item = f"v{v}_t{t}"
            save_audio(root / "audio" / f"{item}.wav", speech.audio)
            rows.append({"id": item, "audio": f"audio/{item}.wav", "duration": speech.duration,
                         "text": text, "words": [w._asdict() for w in speech.words],
                         "speaker": voice, "engine": "espeak", "split": "train"})
    write_manifest(root / "manifest.jsonl", rows)
    cache_teacher_features(root, rows, threads=1, progress=False)
    features = [load_teacher_features(root, r["id"]) for r in rows]  # [T50, 384] each
    return root, rows, features


@pytest.fixture(scope="module")
def units(corpus):
    return fit_units(corpus[2], k=8, seed=0)


def test_fit_and_encode_shapes(corpus, units):
    _, rows, features = corpus
    assert units.centroids.shape == (8, 384) and units.centroids.dtype == np.float32
    for row, f in zip(rows, features):
        assert abs(len(f) - row["duration"] * 50) <= 1
        ids = units.encode(f)
        assert ids.shape == (len(f),) and ids.dtype == np.int64
        assert ids.min() >= 0 and ids.max() < 8
    everything = np.concatenate([units.encode(f) for f in features])
    assert len(np.unique(everything)) >= 6  # speech spreads over the codebook
    # encode agrees with a brute-force nearest centroid (after the position mean is removed)
    f = units.normalize(features[0])
    brute = ((f[:, None, :] - units.centroids[None]) ** 2).sum(-1).argmin(1)
    assert (brute == units.encode(features[0])).mean() > 0.99
    with pytest.raises(VoxlmError, match="dimension 384"):
        units.encode(np.zeros((5, 80), np.float32))


def test_position_mean_is_removed_by_window_position(corpus, units):
    _, _, features = corpus
    f = features[0]
    assert units.position_mean.shape == (max(len(x) for x in features), 384)
    # encoding a slice with its start equals slicing the whole utterance's encoding
    assert (units.encode(f[10:40], start=10) == units.encode(f)[10:40]).all()
    # past the learned positions the global mean is used; positions restart every 30 s
    far = units.normalize(f[:3], start=len(units.position_mean) + 5)
    assert np.allclose(far, f[:3] - units.frame_mean)
    assert np.allclose(units.normalize(f[:3], start=1500), units.normalize(f[:3]))
    plain = fit_units(features, k=8, remove_position=False)
    assert plain.position_mean is None and np.array_equal(plain.normalize(f), f)


def test_fit_needs_enough_frames():
    with pytest.raises(VoxlmError, match="at least 100 frames"):
        fit_units([np.zeros((20, 384), np.float32)], k=100)


def test_dedup_property():
    rng = np.random.default_rng(0)
    assert [len(x) for x in dedup([])] == [0, 0]
    for _ in range(300):
        n = int(rng.integers(1, 60))
        seq = rng.integers(0, int(rng.integers(1, 5)), n)  # small alphabets make long runs
        values, durations = dedup(seq)
        assert (np.repeat(values, durations) == seq).all()  # inverse: expanding gives it back
        assert (durations >= 1).all() and durations.sum() == n
        assert (values[1:] != values[:-1]).all()  # maximal runs: neighbours differ
        assert len(values) == 1 + int((seq[1:] != seq[:-1]).sum())
    runs = dedup([5, 5, 5, 9, 9, 5])
    assert runs.values.tolist() == [5, 9, 5] and runs.durations.tolist() == [3, 2, 1]


def test_save_load_round_trip_and_bad_files(units, corpus, tmp_path):
    path = units.save(tmp_path / "units.npz")
    back = Units.load(path)
    assert np.array_equal(back.centroids, units.centroids) and back.meta == units.meta
    assert np.array_equal(back.position_mean, units.position_mean)
    assert np.array_equal(back.frame_mean, units.frame_mean)
    assert (back.encode(corpus[2][1]) == units.encode(corpus[2][1])).all()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file
    with pytest.raises(VoxlmError, match="no such units file"):
        Units.load(tmp_path / "missing.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(VoxlmError, match="not a readable units file"):
        Units.load(cut)
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(VoxlmError, match="not a readable units file"):
        Units.load(junk)
    old = tmp_path / "old.npz"
    np.savez(old, centroids=units.centroids, format=np.int64(99), meta=np.array("{}"))
    with pytest.raises(VoxlmError, match="units format 99"):
        Units.load(old)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, centroids=units.centroids, format=np.int64(1), meta=np.array("{}"),
             position_mean=units.position_mean[:, :10], frame_mean=units.frame_mean)
    with pytest.raises(VoxlmError, match="do not match"):
        Units.load(wrong)
    plain = Units(units.centroids, meta={"k": 8})  # no position removal: saved and read back
    assert Units.load(plain.save(tmp_path / "plain.npz")).position_mean is None


def test_corpus_fit_and_encode_write_jsonl(corpus, tmp_path):
    root, rows, features = corpus
    fitted = fit_units_for_corpus(root, tmp_path / "u.npz", k=8, progress=False)
    assert fitted.meta["items"] == len(rows)
    n = encode_corpus(root, tmp_path / "u.npz", tmp_path / "u.jsonl", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert n == len(rows) == len(lines)
    for row, line, f in zip(rows, lines, features):
        assert line["id"] == row["id"] and sum(line["durations"]) == len(f)
        assert np.array_equal(np.repeat(line["units"], line["durations"]), fitted.encode(f))


def test_dtw_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        cost = rng.random((int(rng.integers(1, 7)), int(rng.integers(1, 7))))
        n, m = cost.shape
        acc = np.full((n, m), np.inf)
        for i in range(n):
            for j in range(m):
                if i == j == 0:
                    acc[i, j] = 2 * cost[0, 0]
                    continue
                acc[i, j] = min(acc[i - 1, j] + cost[i, j] if i else np.inf,
                                acc[i, j - 1] + cost[i, j] if j else np.inf,
                                acc[i - 1, j - 1] + 2 * cost[i, j] if i and j else np.inf)
        assert np.isclose(dtw_distance(cost), acc[-1, -1] / (n + m))
    assert dtw_distance(np.zeros((3, 5))) == 0.0


def test_abx_across_voices_is_above_chance(corpus, units):
    root, rows, _ = corpus
    result = abx_score(root, units, rows, seed=0)
    assert result.triplets >= 30 and result.speakers == len(VOICES)
    assert result.features > 0.9 and result.normalized > 0.9, result  # Whisper keeps words
    assert result.units > 0.75 and result.centroids > 0.75, result  # 8 units keep most of it
