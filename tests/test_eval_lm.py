"""LM evaluation: minimal-pair builders, log-likelihood scoring against the model's own loss, an
overfit LM preferring its sequence, validation loss per stream, the `voxlm eval lm` report."""
import importlib.util
import json
import math
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxlm.audio import save_audio
from voxlm.cli import main
from voxlm.codec.model import Codec, codec_config
from voxlm.codec.train import export_codec
from voxlm.data import write_manifest
from voxlm.errors import VoxlmError
from voxlm.eval import minimal_pairs as mp
from voxlm.eval.lm import pair_accuracy, score_codes, speech_eval, validation_losses
from voxlm.lm.data import TokenShards, collate, config_for_shards
from voxlm.lm.model import LM, lm_config, lm_loss, save_lm
from voxlm.lm.streams import continuation
from voxlm.lm.tokenize_corpus import sha256_bytes, tokenize_corpus
from voxlm.lm.tokenizer import train_tokenizer
from voxlm.lm.train import stream_losses

torch.set_num_threads(1)
SENTENCES = ["The weather is nice today.", "Where did you put the blue box?",
             "She opened the window and smiled.", "Tell me a short story about a cat."]
FREQUENT = Counter({w: 100 - i for i, w in enumerate(
    "people time because think about good little water under number other".split())})


@pytest.fixture(scope="module")
def lexicon():
    return mp.load_lexicon()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny codec, a tiny random LM that fits it, and token shards of four eSpeak sentences
    (one in split valid) made with that codec."""
    from voxlm.synth.engines import get_engine, parse_voice

    root = tmp_path_factory.mktemp("eval_lm")
    torch.manual_seed(0)
    codec = export_codec(Codec(codec_config("tiny")), root / "codec.safetensors")
    engine = get_engine("espeak")
    rows = []
    for i, text in enumerate(SENTENCES):
        speech = engine.speak(text, parse_voice("espeak:en-us+m1"))
        save_audio(root / "corpus" / "audio" / f"{i}.wav", speech.audio)
        rows.append({"id": f"u{i}", "audio": f"audio/{i}.wav", "duration": speech.duration,
                     "text": text, "words": [{"w": w.w, "start": w.start, "end": w.end}
                                             for w in speech.words],
                     "speaker": "espeak:en-us+m1", "engine": "espeak",
                     "split": "valid" if i == 3 else "train"})
    write_manifest(root / "corpus" / "manifest.jsonl", rows)
    train_tokenizer(SENTENCES * 8, 300, root / "tokenizer.model")  # beside the LM file
    tokenize_corpus(root / "corpus", root / "tokens", codec, root / "tokenizer.model", workers=1,
                    progress=False)
    config = config_for_shards(lm_config("tiny"), TokenShards(root / "tokens"))
    torch.manual_seed(1)
    lm = LM(config).eval()
    extra = {"mode": "aligned", "codec_sha256": sha256_bytes(codec.read_bytes())}
    save_lm(root / "lm.safetensors", lm, extra=extra)
    return {"root": root, "codec": codec, "lm": lm, "lm_file": root / "lm.safetensors",
            "tokens": root / "tokens", "extra": extra}


# ---------------------------------------------------------------- pair builders

def test_nonwords_are_one_phoneme_away_and_not_in_the_lexicon(lexicon):
    pairs = mp.nonword_pairs(lexicon, FREQUENT, 8, seed=3)
    known = {p for prons in lexicon.values() for p in prons}
    attested = Counter(t for p in known for t in mp._trigrams(p))
    assert len(pairs) == 8 and len({p.bad.phones for p in pairs}) == 8
    for pair in pairs:
        word, fake = pair.good.phones, pair.bad.phones
        assert word == lexicon[pair.good.text][0] and fake not in known
        changed = [i for i, (a, b) in enumerate(zip(word, fake)) if a != b]
        assert len(word) == len(fake) and len(changed) == 1
        a, b = word[changed[0]], fake[changed[0]]
        assert (a in mp.VOWELS) == (b in mp.VOWELS)  # a vowel for a vowel
        assert all(attested[t] >= 5 for t in mp._trigrams(fake))  # phonotactically attested
        assert pair.good.stress == pair.bad.stress and pair.good.key != pair.bad.key
    assert [p.good.text for p in pairs][:3] == ["people", "time", "because"]  # by frequency
    assert mp.nonword_pairs(lexicon, FREQUENT, 8, seed=3) == pairs  # deterministic


def test_missing_pocketsphinx_names_the_pip_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pocketsphinx" else real(name, *a))
    with pytest.raises(VoxlmError, match="pip install pocketsphinx"):
        mp.load_lexicon()


def test_blimp_pairs_differ_in_grammar_only():
    pairs = mp.blimp_pairs(48, seed=0)
    assert len(pairs) == 48 and {p.kind for p in pairs} == set(mp.PHENOMENA)
    assert len({p.good.text for p in pairs}) == 48
    for pair in pairs:
        good, bad = pair.good.text.split(), pair.bad.text.split()
        assert good != bad and len(good) == len(bad)
        if pair.kind == "adjective_order":  # the same words in another order
            assert sorted(good[1:]) == sorted(bad[1:])
        else:  # one word changed
            assert sum(a != b for a, b in zip(good, bad)) == 1, pair
    assert mp.blimp_pairs(48, seed=0) == pairs and mp.blimp_pairs(48, seed=1) != pairs
    with pytest.raises(ValueError, match="unknown phenomenon"):
        mp.blimp_pair("negation", __import__("random").Random(0))


def test_story_pairs_end_with_another_storys_ending():
    pairs = mp.story_pairs(30, seed=0)
    endings = {e.split()[-1] for _, e in mp.STORIES}
    assert len(pairs) == 30 and len({(p.context.text, p.good.text) for p in pairs}) == 30
    for pair in pairs:
        assert pair.good.text != pair.bad.text and pair.bad.text.split()[-1] in endings
        story = int(pair.kind[len("story"):])
        assert pair.good.text.split()[-1] == mp.STORIES[story][1].split()[-1]
        assert "{" not in pair.context.text + pair.good.text + pair.bad.text
    with pytest.raises(VoxlmError, match="unknown zero-shot task"):
        mp.build_pairs(("swuggy", "sbimp"), 2)


def test_without_festival_pairs_fall_back_to_espeak_voices_no_corpus_uses(monkeypatch, tmp_path,
                                                                          lexicon):
    from voxlm.audio import load_audio
    from voxlm.synth.engines import ESPEAK_VOICES

    which = mp.shutil.which
    monkeypatch.setattr(mp.shutil, "which", lambda name: None if name == "festival" else which(name))
    synth = mp.held_out_synthesizer()
    assert synth.engine == "espeak" and "FALLBACK" in synth.note
    assert not set(synth.voices) & set(ESPEAK_VOICES)
    phones = lexicon["people"][0]
    says = [(mp.Say("people", phones, mp.stress_of(phones)), synth.voices[0]),
            (mp.Say("The dogs run every day."), synth.voices[1])]
    paths = mp.synthesize(says, synth, tmp_path)
    seconds = [len(load_audio(paths[(s.key, v)])) / 16000 for s, v in says]
    assert 0.3 < seconds[0] < 1.5 and 1.0 < seconds[1] < 4.0


# ---------------------------------------------------------------- scoring

def test_score_is_the_models_log_likelihood(world):
    lm, c = world["lm"], world["lm"].config
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, c.card, (4, t)), 0) for t in (5, 9, 7)]
    scores = score_codes(lm, items)  # batched, padded to the longest
    for (codes, _), total, semantic in zip(items, scores.total, scores.semantic):
        tokens = torch.from_numpy(continuation(codes, c))[None]  # [1, S, L]
        with torch.no_grad():
            sums, _ = stream_losses(lm(tokens), tokens)  # cross-entropy sums: text, codebooks
        assert total == pytest.approx(-float(sums[1:].sum()), rel=1e-4)
        assert semantic == pytest.approx(-float(sums[1]), rel=1e-4)
    assert list(scores.frames) == [5, 9, 7]
    codes = items[1][0]
    later = score_codes(lm, [(codes, 4)])  # frames 0..3 are context only
    assert scores.total[1] < later.total[0] < 0 and later.frames[0] == 5
    # untrained: about log(1/card) per code, so pairs of random sequences sit near chance
    per_code = scores.total / (scores.frames * c.n_q)
    assert np.allclose(per_code, -math.log(c.card), rtol=0.15)
    good = [(rng.integers(0, c.card, (4, 8)), 0) for _ in range(60)]
    bad = [(rng.integers(0, c.card, (4, 8)), 0) for _ in range(60)]
    assert 0.3 <= pair_accuracy(score_codes(lm, good).total, score_codes(lm, bad).total) <= 0.7
    assert pair_accuracy([1, 2, 3], [0, 2, 4]) == pytest.approx(0.5)


def test_an_lm_overfit_on_a_sequence_prefers_it_to_shuffles(world):
    c = world["lm"].config
    rng = np.random.default_rng(1)
    codes = rng.integers(0, c.card, (c.n_q, 12))  # [n_q, T]
    torch.manual_seed(0)
    lm = LM(c)
    optimizer = torch.optim.Adam(lm.parameters(), lr=3e-3)
    tokens = collate([continuation(codes, c)], c)
    for _ in range(40):
        loss = lm_loss(lm(tokens), tokens)["audio"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.eval()
    shuffled = [(codes[:, rng.permutation(12)], 0) for _ in range(10)]
    own = score_codes(lm, [(codes, 0)] * 10)
    other = score_codes(lm, shuffled)
    assert pair_accuracy(own.total, other.total) == 1.0
    assert pair_accuracy(own.semantic, other.semantic) == 1.0
    before = score_codes(world["lm"], [(codes, 0)])
    assert own.total[0] > before.total[0] + 10  # nats gained on the sequence it learned


# ---------------------------------------------------------------- validation loss

def test_validation_loss_per_stream_and_layout(world):
    rows = validation_losses(world["lm"], world["tokens"], extra=world["extra"])
    assert [(r["split"], r["layout"]) for r in rows] == [
        ("valid", "continuation"), ("valid", "aligned TTS (text leads)"),
        ("valid", "aligned ASR (audio leads)")]
    c = world["lm"].config
    for row in rows:
        assert row["streams"] == 1 and row["frames"] > 10
        assert len(row["per_codebook"]) == c.n_q and row["semantic"] == row["per_codebook"][0]
        assert abs(row["audio"] - math.log(c.card)) < 1.0  # untrained: near uniform
    assert rows[0]["text"] is None  # continuation has no text targets
    assert abs(rows[1]["text"] - math.log(c.text_card)) < 1.5
    with pytest.raises(VoxlmError, match="another codec"):
        validation_losses(world["lm"], world["tokens"], extra={"codec_sha256": "0" * 64})
    # an LM trained with a decoder-only fine-tune of the tokens' codec reads them
    tuned = {"codec_sha256": "0" * 64, "codec_codes_of": [sha256_bytes(world["codec"].read_bytes())]}
    assert len(validation_losses(world["lm"], world["tokens"], extra={**world["extra"], **tuned})) == 3
    small = LM(lm_config("tiny"))  # card 64 but only 40 text ids: the tokens need more
    with pytest.raises(VoxlmError, match="does not fit the tokens"):
        validation_losses(small, world["tokens"])


# ---------------------------------------------------------------- the command

def test_eval_lm_writes_report_png_and_json(world, tmp_path, capsys):
    report = tmp_path / "report"
    args = ["eval", "lm", "--report", str(report), "--checkpoint", str(world["lm_file"]),
            "--codec", str(world["codec"]), "--data", str(world["tokens"]), "--limit", "3",
            "--no-speech", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    text = (report / "report.md").read_text()
    assert "## Validation loss" in text and "aligned ASR (audio leads)" in text
    for name in ("sWUGGY-like", "sBLIMP-like", "tStoryCloze-like", "TWIST-1.3B"):
        assert name in text
    assert (report / "zero_shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((report / "results.json").read_text())
    assert set(results["zero_shot"]) == set(mp.TASKS)
    for summary in results["zero_shot"].values():
        assert summary["pairs"] == 3 and 0 <= summary["accuracy"] <= 1
    rows = [json.loads(line) for line in (report / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and all(r["good"] != r["bad"] for r in rows)
    assert {r["voice"] for r in rows} <= set(mp.FESTIVAL_VOICES + mp.FALLBACK_VOICES)
    wavs = sorted((report / "cache" / "audio").rglob("*.wav"))
    assert len(wavs) == 21  # 3 x 2 words, 3 x 2 sentences, 3 x (story + 2 endings)
    stamps = [w.stat().st_mtime_ns for w in wavs]
    assert main(args) == 0  # the rerun reuses the cached audio and codes
    assert [w.stat().st_mtime_ns for w in sorted((report / "cache" / "audio").rglob("*.wav"))] \
        == stamps
    rerun = json.loads((report / "results.json").read_text())
    assert rerun["zero_shot"] == results["zero_shot"]


@pytest.mark.parametrize("extra_args, message", [
    (["--limit", "0"], "use 1 or more"),
    (["--tasks", "swuggy,blimp"], "unknown zero-shot task"),
    (["--real", "nowhere"], "no manifest.jsonl in nowhere"),
    (["--data", "nowhere"], "no such tokens folder"),
    (["--checkpoint", "missing.safetensors"], "model file not found"),
])
def test_eval_lm_bad_input_is_one_line(world, tmp_path, capsys, extra_args, message):
    args = ["eval", "lm", "--report", str(tmp_path / "r"), "--checkpoint", str(world["lm_file"]),
            "--codec", str(world["codec"]), "--no-speech", "--quiet", *extra_args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eval_lm_refuses_a_codec_the_lm_was_not_trained_on(world, tmp_path, capsys):
    torch.manual_seed(5)
    other = export_codec(Codec(codec_config("tiny")), tmp_path / "other.safetensors")
    args = ["eval", "lm", "--report", str(tmp_path / "r"), "--checkpoint", str(world["lm_file"]),
            "--codec", str(other), "--no-speech", "--quiet"]
    assert main(args) == 2 and "another codec" in capsys.readouterr().err
    save_lm(tmp_path / "small_card.safetensors", LM(replace(lm_config("tiny"), card=32)))
    args[5] = str(tmp_path / "small_card.safetensors")
    args[7] = str(world["codec"])
    assert main(args) == 2 and "does not fit" in capsys.readouterr().err


def test_speech_rows_run_through_the_generation_api(world, tmp_path):
    pytest.importorskip("voxlm.lm.speech")
    wav, text = world["root"] / "corpus" / "audio" / "3.wav", SENTENCES[3]
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "r0.wav").write_bytes(wav.read_bytes())  # realset format, one row
    write_manifest(tmp_path / "real" / "manifest.jsonl", [{
        "id": "r0", "audio": "r0.wav", "duration": 1.0, "text": text, "words": [],
        "speaker": "asterisk:allison", "engine": "real", "split": "test"}])
    out = speech_eval(world["lm_file"], world["codec"], ["The cat sat down."], [(wav, text)],
                      tmp_path / "real", limit=1)
    assert list(out) == ["tts", "continuation (held-out voice prompt)", "asr held-out voices",
                         "asr real (Asterisk)"]
    assert all(row["utterances"] == 1 for row in out.values())
    assert out["tts"]["wer"] >= 0 and out["asr real (Asterisk)"]["wer"] >= 0
    save_lm(tmp_path / "cont.safetensors", world["lm"], extra={"mode": "continuation"})
    out = speech_eval(tmp_path / "cont.safetensors", world["codec"], ["Hi."], [])
    assert "continuation mode" in out["skipped"]


def test_speech_rows_say_why_they_did_not_run(world, monkeypatch):
    import voxlm.lm

    monkeypatch.setitem(sys.modules, "voxlm.lm.speech", None)  # as if the module were absent
    monkeypatch.delattr(voxlm.lm, "speech", raising=False)
    out = speech_eval(world["lm_file"], world["codec"], ["Hello."], [])
    assert "voxlm.lm.speech is not available" in out["skipped"]
