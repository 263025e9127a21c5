import numpy as np
import pytest

SR = 16_000


def pauses(audio: np.ndarray, min_seconds: float = 0.15, floor_db: float = -40.0):
    """Silences longer than min_seconds between speech, by a 10 ms energy gate: [(start, end)]."""
    hop = SR // 100
    n = len(audio) // hop
    db = 10 * np.log10(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    speech = db > db.max() + floor_db
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(int), [0]])))
    for on, off in zip(edges[::2], edges[1::2]):  # clicks (speech under 30 ms) are not words
        if off - on < 3:
            speech[on:off] = False
    idx = np.nonzero(speech)[0]
    out = []
    for a, b in zip(idx[:-1], idx[1:]):
        if (b - a - 1) * hop / SR >= min_seconds:
            out.append(((a + 1) * hop / SR, b * hop / SR))
    return out


@pytest.fixture(scope="session")
def engines():
    from voxlm.synth.engines import get_engine

    made = {}

    def get(name):
        if name not in made:
            made[name] = get_engine(name)
        return made[name]

    yield get
    for e in made.values():
        e.close()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small eSpeak corpus (about 40 s of speech) with cached teacher features."""
    from voxlm.codec.teacher import cache_teacher_features
    from voxlm.data import read_manifest
    from voxlm.synth.corpus import CorpusConfig, synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    config = CorpusConfig(minutes=0.7, engines=("espeak",), voices=6, augment=0.0, workers=1)
    manifest = synthesize_corpus(out, config, progress=False)
    cache_teacher_features(out, read_manifest(manifest), progress=False)
    return out


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """Four eSpeak sentences (about 9 s, all train) with cached teacher features and pitch:
    enough for a few tiny-codec training steps in a subprocess."""
    from voxlm.audio import save_audio
    from voxlm.codec.teacher import cache_teacher_features
    from voxlm.data import write_manifest
    from voxlm.pitch import cache_pitch
    from voxlm.synth.engines import get_engine, parse_voice

    out = tmp_path_factory.mktemp("small_corpus")
    sentences = ["The quick brown fox jumps over the lazy dog.", "Can you count from three to nine?",
                 "We walked along the river until sunset.", "She opened the window and smiled."]
    engine = get_engine("espeak")
    rows = []
    try:
        for i, text in enumerate(sentences):
            voice = parse_voice(("espeak:en-us+m1", "espeak:en-us+f2")[i % 2])
            speech = engine.speak(text, voice)
            save_audio(out / "audio" / f"{i:03d}.wav", speech.audio)
            rows.append({"id": f"{i:03d}", "audio": f"audio/{i:03d}.wav",
                         "duration": round(speech.duration, 3), "text": text,
                         "words": [{"w": w.w, "start": w.start, "end": w.end} for w in speech.words],
                         "speaker": voice.id, "engine": "espeak", "split": "train"})
    finally:
        engine.close()
    write_manifest(out / "manifest.jsonl", rows)
    cache_teacher_features(out, rows, progress=False)
    cache_pitch(out, rows, progress=False)
    return out
