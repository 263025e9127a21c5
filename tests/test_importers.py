"""`voxlm data import`: tiny LibriSpeech, LibriLight and Fisher trees in their published layouts,
made of eSpeak speech with known word times, imported into voxlm corpus folders (ids, splits,
durations, texts, channels, word timings); resume without duplicates; bad inputs as one line
(docs/RELIABILITY.md, "Corpus import"); and the large recipe's data path at tiny size: tokenize
the imported LibriLight corpus with the shipped codec, then `torchrun --nproc_per_node 2 ...
lm train --fsdp --mode continuation` for 2 steps."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from voxlm.audio import SAMPLE_RATE, resample
from voxlm.cli import main
from voxlm.errors import VoxlmError
from voxlm.importers import (PAD_SECONDS, clean_fisher_text, hashed_split, import_corpus,
                             pieces)
from voxlm.lm.data import LayoutConfig, LMData, config_for_shards, open_shards
from voxlm.lm.model import lm_config

torch.set_num_threads(1)
SENTENCES = ["The weather is nice today.", "Can you count from three to nine?",
             "I would like a cup of tea please.", "Where did you put the blue box?",
             "We walked along the river until sunset.", "She opened the window and smiled."]
VOICES = ("en-gb-scotland+f1", "en-029+m6", "en-us+f5", "en-gb-x-rp+m7")
LIBRISPEECH = [  # (subset, speaker, chapter, utterance, sentence, voice)
    ("train-clean-100", "19", "198", 0, 0, 0), ("train-clean-100", "19", "198", 1, 1, 0),
    ("train-clean-100", "26", "495", 0, 2, 1), ("dev-clean", "84", "121123", 0, 3, 2),
    ("test-clean", "61", "70968", 0, 4, 3)]
LIBRILIGHT_SPEAKERS = ("1000", "2002")  # both hash to train: the LM trains on their pieces


def _speak(text, voice, rate=1.1):
    """(audio [T] 16 kHz, [(w, start, end)]) by eSpeak NG, exact word times."""
    from voxlm.synth.engines import espeak_speech

    audio, words = espeak_speech(text, voice, rate=rate)
    return audio, [(w.w, w.start, w.end) for w in words]


def _words(text):
    from voxlm.synth.engines import text_words

    return [w for w, _, _ in text_words(text)]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("import_src")
    truth = {}
    ls = root / "LibriSpeech"
    for subset, speaker, chapter, utt, sentence, voice in LIBRISPEECH:
        folder = ls / subset / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"{speaker}-{chapter}-{utt:04d}"
        audio, words = _speak(SENTENCES[sentence], VOICES[voice])
        sf.write(folder / f"{uid}.flac", audio, SAMPLE_RATE)
        text = " ".join(_words(SENTENCES[sentence])).upper()
        with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as f:
            f.write(f"{uid} {text}\n")
        truth[uid] = words
    ll = root / "librilight" / "small"
    for k, speaker in enumerate(LIBRILIGHT_SPEAKERS):  # 5 sentences, 0.8 s pauses: a "chapter"
        parts, runs, t = [], [], 0.5
        for s in range(5):
            audio, _ = _speak(SENTENCES[(s + k) % 6], VOICES[k])
            parts += [np.zeros(int(0.8 * SAMPLE_RATE), np.float32), audio]
            runs.append((round(t + 0.8, 3), round(t + 0.8 + len(audio) / SAMPLE_RATE, 3)))
            t += 0.8 + len(audio) / SAMPLE_RATE
        audio = np.concatenate([np.zeros(int(0.5 * SAMPLE_RATE), np.float32), *parts])
        folder = ll / speaker / f"book_{k}_librivox_64kb_mp3"
        folder.mkdir(parents=True)
        sf.write(folder / f"chapter_{k:02d}_64kb.flac", audio, SAMPLE_RATE)
        if k == 0:  # the other file has no json: voxlm's own energy gate finds the pauses
            (folder / f"chapter_{k:02d}_64kb.json").write_text(json.dumps(
                {"speaker": speaker, "voice_activity": [list(r) for r in runs]}))
        truth[speaker] = (runs, len(audio) / SAMPLE_RATE)
    fisher = root / "fisher"
    stereo, lines, t = np.zeros((int(13 * SAMPLE_RATE), 2), np.float32), ["# fe_03_00001.sph", ""], 0.6
    for turn in range(4):  # A, B, A, B, 0.4 s apart
        audio, words = _speak(SENTENCES[turn], VOICES[turn % 2])
        start = int(t * SAMPLE_RATE)
        stereo[start:start + len(audio), turn % 2] = audio
        text = " ".join(_words(SENTENCES[turn])).lower()
        marks = {0: "[noise] " + text, 1: text.replace("you", "((you))"), 2: text + " [laughter]"}
        lines += [f"{t + words[0][1] - 0.1:.2f} {t + words[-1][2] + 0.1:.2f} {'AB'[turn % 2]}: "
                  f"{marks.get(turn, text)}", ""]
        t += len(audio) / SAMPLE_RATE + 0.4
    stereo = stereo[: int((t + 0.5) * SAMPLE_RATE)]
    narrow = 0.7 * resample(stereo, SAMPLE_RATE, 8000)  # [T, 2] at 8 kHz: telephone
    for name in ("fe_03_00001", "fe_03_00002"):  # the second has no transcript
        (fisher / "audio" / "000").mkdir(parents=True, exist_ok=True)
        sf.write(root / f"{name}.wav", narrow, 8000, subtype="PCM_16")
        subprocess.run(["sox", str(root / f"{name}.wav"), "-e", "u-law",
                        str(fisher / "audio" / "000" / f"{name}.sph")], check=True)
    (fisher / "trans" / "000").mkdir(parents=True)
    (fisher / "trans" / "000" / "fe_03_00001.txt").write_text("\n".join(lines) + "\n")
    truth["fisher"] = (lines, len(narrow) / 8000)
    return {"root": root, "librispeech": ls, "librilight": root / "librilight", "fisher": fisher,
            "truth": truth}


@pytest.fixture(scope="module")
def imported(trees, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    results = {fmt: import_corpus(fmt, trees[fmt], out / fmt, workers=1, progress=False,
                                  segment_seconds=8.0) for fmt in ("librilight", "fisher")}
    results["librispeech"] = import_corpus("librispeech", trees["librispeech"], out / "librispeech",
                                           workers=2, progress=False)  # the process pool
    return {fmt: (out / fmt, r, [json.loads(line) for line in r.manifest.open()])
            for fmt, r in results.items()}


def _check_audio(folder, row, channels=1):
    info = sf.info(folder / row["audio"])
    assert (info.samplerate, info.channels) == (SAMPLE_RATE, channels)
    assert abs(info.frames / SAMPLE_RATE - row["duration"]) < 1e-3


def test_librispeech(imported, trees):
    folder, result, rows = imported["librispeech"]
    uids = sorted(f"{s}-{c}-{u:04d}" for _, s, c, u, _, _ in LIBRISPEECH)
    assert sorted(r["id"] for r in rows) == uids and result.units == result.imported == 5
    splits = {f"{s}-{c}-{u:04d}": sub.split("-")[0] for sub, s, c, u, _, _ in LIBRISPEECH}
    assert {r["id"]: r["split"] for r in rows} == {
        k: {"train": "train", "dev": "valid", "test": "test"}[v] for k, v in splits.items()}
    errors = []
    for row in rows:
        _check_audio(folder, row)
        sentence = SENTENCES[next(x[4] for x in LIBRISPEECH if row["id"].endswith(f"-{x[3]:04d}")
                                  and row["id"].startswith(f"{x[1]}-{x[2]}"))]
        assert row["text"] == " ".join(_words(sentence)).lower()
        assert row["speaker"] == "librispeech:" + row["id"].split("-")[0]
        assert row["word_timings"] == "dtw" and row["source"] == "librispeech"
        assert [w["w"] for w in row["words"]] == row["text"].split()
        truth = trees["truth"][row["id"]]
        errors += [abs(w["start"] - t[1]) for w, t in zip(row["words"], truth)]
        assert all(0 <= w["start"] < w["end"] <= row["duration"] + 0.01 for w in row["words"])
    assert np.median(errors) < 0.06, np.median(errors)  # another eSpeak voice than the reference


def test_librilight_pieces(imported, trees):
    folder, result, rows = imported["librilight"]
    assert result.units == 2 and len(rows) >= 4
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        _check_audio(folder, row)
        assert (row["text"], row["words"], row["word_timings"]) == ("", [], "none")
        assert row["duration"] <= 8.0 + 1e-3 and row["split"] == "train"
    for k, speaker in enumerate(LIBRILIGHT_SPEAKERS):
        mine = [r for r in rows if r["speaker"] == f"librilight:{speaker}"]
        spans = [(r["offset"], r["offset"] + r["duration"]) for r in mine]
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:]))  # in order, no overlap
        runs, _ = trees["truth"][speaker]
        for on, off in runs:  # every sentence lies whole inside one piece
            assert any(a <= on + 0.05 and off - 0.05 <= b for a, b in spans), (speaker, on, off)


def test_fisher_dialogue(imported, trees):
    folder, result, rows = imported["fisher"]
    assert result.note == "1 conversation(s) without a transcript left out"
    (row,) = rows
    assert row["id"] == "fe_03_00001" and row["split"] == hashed_split("fisher:fe_03_00001")
    _check_audio(folder, row, channels=2)
    lines, seconds = trees["truth"]["fisher"]
    assert abs(row["duration"] - seconds) < 1e-3
    assert [t["channel"] for t in row["turns"]] == [0, 1, 0, 1]
    for turn, sentence in zip(row["turns"], SENTENCES):
        assert turn["text"] == " ".join(_words(sentence)).lower() and turn["kind"] == "turn"
        assert [w["w"] for w in turn["words"]] == turn["text"].split()
        assert all(turn["start"] - PAD_SECONDS <= w["start"] < w["end"] <= turn["end"] + PAD_SECONDS
                   for w in turn["words"])
    assert [w["channel"] for w in row["words"]] == [t["channel"] for t in row["turns"]
                                                     for _ in t["words"]]
    assert row["text"].splitlines()[0].startswith("A: the weather")
    audio, rate = sf.read(folder / row["audio"])  # channel 1 silent while A speaks alone
    first = row["turns"][0]
    a, b = int(first["start"] * rate), int(first["end"] * rate)
    assert np.abs(audio[a:b, 0]).max() > 0.05 > np.abs(audio[a:b, 1]).max()


def test_helpers():
    assert clean_fisher_text("[noise] so ((you know)) i [[skip]] [laughter] mean") == \
        "so you know i mean"
    assert clean_fisher_text("[noise] (( ))") == ""
    cut = pieces([(0.5, 3.0), (3.5, 6.0), (7.0, 9.0), (9.2, 30.0)], 31.0, 10.0)
    assert all(b - a <= 10.0 + 1e-9 for a, b in cut) and cut[0][0] == 0.25
    assert all(a[1] <= b[0] for a, b in zip(cut, cut[1:])) and cut[-1][1] <= 31.0
    assert {hashed_split(f"s{k}") for k in range(1000)} == {"train", "valid", "test"}


def test_resume_without_duplicates(trees, tmp_path):
    out = tmp_path / "ls"
    first = import_corpus("librispeech", trees["librispeech"], out, limit=2, workers=1,
                          progress=False, align=False)
    assert (first.items, first.imported) == (2, 2)
    done = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.json")}
    whole = import_corpus("librispeech", trees["librispeech"], out, workers=1, progress=False,
                          align=False)
    assert (whole.items, whole.imported) == (5, 3)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not redone
    manifest = whole.manifest.read_text()
    victim = sorted((out / "audio").rglob("*.json"))[-1]  # a run killed before this sidecar
    victim.unlink()
    (victim.parent / f".{victim.stem}.flac.x1.tmp").write_bytes(b"half")
    again = import_corpus("librispeech", trees["librispeech"], out, workers=1, progress=False,
                          align=False)
    assert (again.items, again.imported) == (5, 1) and again.manifest.read_text() == manifest
    assert not list(out.rglob(".*.tmp"))
    ids = [json.loads(line)["id"] for line in manifest.splitlines()]
    assert len(ids) == len(set(ids)) == 5
    assert all(json.loads(line)["word_timings"] == "none" for line in manifest.splitlines())
    with pytest.raises(VoxlmError, match="other options"):  # alignment on now: another import
        import_corpus("librispeech", trees["librispeech"], out, workers=1, progress=False)


def test_unreadable_audio_is_skipped(trees, tmp_path):
    src = tmp_path / "LibriSpeech"
    shutil.copytree(trees["librispeech"], src)
    (src / "dev-clean" / "84" / "121123" / "84-121123-0000.flac").write_bytes(b"not audio")
    result = import_corpus("librispeech", src, tmp_path / "out", workers=1, progress=False,
                           align=False)
    assert result.items == 4 and [k for k, _ in result.skipped] == ["84-121123-0000"]
    assert "not a readable audio file" in result.skipped[0][1]
    assert json.loads((tmp_path / "out" / "skipped.jsonl").read_text())["key"] == "84-121123-0000"
    fisher = tmp_path / "fisher"  # case import-fisher-shorten: SPHERE libsndfile cannot decode
    shutil.copytree(trees["fisher"], fisher)
    sph = fisher / "audio" / "000" / "fe_03_00001.sph"
    data = sph.read_bytes()
    head = b"NIST_1A\n   1024\nchannel_count -i 2\nsample_rate -i 8000\n" \
           b"sample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n"
    sph.write_bytes(head.ljust(1024, b" ") + data[1024:])
    with pytest.raises(VoxlmError, match=r"none of its 1 audio files could be read \(the first: "
                                         r".*shorten-compressed SPHERE, which libsndfile cannot"):
        import_corpus("fisher", fisher, tmp_path / "fisher_out", workers=1, progress=False)
    reason = json.loads((tmp_path / "fisher_out" / "skipped.jsonl").read_text())["reason"]
    assert reason.endswith("decode it first: sph2pipe -f wav IN.sph IN.wav")


# ---------------------------------------------------------------- bad input (docs/RELIABILITY.md)

def _bad_inputs(root):
    (root / "empty").mkdir()
    (root / "afile").write_text("x")
    ls = root / "ls" / "train-clean-100" / "1" / "2"
    ls.mkdir(parents=True)
    (ls / "1-2.trans.txt").write_text("1-2-0000 HELLO\nHELLO THERE\n")
    sph = root / "fisher_notext" / "000"
    sph.mkdir(parents=True)
    sf.write(sph / "fe_03_09999.sph", np.zeros((800, 2), np.float32), 8000, format="NIST")
    bad = root / "badaudio" / "train-clean-100" / "1" / "2"
    bad.mkdir(parents=True)
    (bad / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    (bad / "1-2-0000.flac").write_bytes(b"not audio")
    (root / "other" / "audio").mkdir(parents=True)
    (root / "other" / "notes.txt").write_text("mine")


CASES = {  # case: (argv after `voxlm data import`, words of the one-line error)
    "import-src-missing": (["--format", "librispeech", "--src", "nothing"], "no such folder; pass --src"),
    "import-src-is-file": (["--format", "fisher", "--src", "afile"], "not a folder"),
    "import-src-empty": (["--format", "librispeech", "--src", "empty"],
                         "no *.trans.txt transcripts under it; pass --src a LibriSpeech folder"),
    "import-wrong-layout": (["--format", "librilight", "--src", "ls"], "no .flac files under it"),
    "import-bad-transcript-line": (["--format", "librispeech", "--src", "ls"],
                                   "1-2.trans.txt:2: not '1-2-UTT TRANSCRIPT'; repair"),
    "import-no-fisher-transcripts": (["--format", "fisher", "--src", "fisher_notext"],
                                     "none of its 1 conversations has a transcript"),
    "import-nothing-readable": (["--format", "librispeech", "--src", "badaudio"],
                                "none of its 1 audio files could be read (the first: "),
    "import-out-not-empty": (["--format", "librispeech", "--src", "badaudio", "--out", "other"],
                             "not empty and not an import folder; pass a new --out folder"),
    "import-limit-negative": (["--format", "librilight", "--src", "ls", "--limit", "-1"],
                              "--limit -1; pass 0 (all)"),
    "import-segment-zero": (["--format", "librilight", "--src", "ls", "--segment-seconds", "0"],
                            "--segment-seconds 0.0; pass a length from 1 to 120 seconds"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_error(case, tmp_path, capsys, monkeypatch):
    _bad_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv, words = CASES[case]
    out = [] if "--out" in argv else ["--out", "out"]
    assert main(["data", "import", *argv, *out, "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voxlm: error: ") and len(err.splitlines()) == 1, err
    assert words in err, err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_cli_wrong_format_name(capsys):  # case import-format-unknown: the parser refuses it
    with pytest.raises(SystemExit) as exit_:
        main(["data", "import", "--format", "timit", "--src", "x", "--out", "y"])
    assert exit_.value.code == 2
    assert "argument --format: invalid choice: 'timit'" in capsys.readouterr().err
    with pytest.raises(VoxlmError, match="unknown format 'timit'; choose one of librispeech"):
        import_corpus("timit", "x", "y")


# ---------------------------------------------------------------- the large recipe's data path

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from voxlm.lm.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("text") / "text.model"
    return train_tokenizer([s.lower() for s in SENTENCES] * 4, 300, path), path


def test_duplex_needs_timings(trees, text_model, tmp_path):
    import_corpus("fisher", trees["fisher"], tmp_path / "fisher", workers=1, progress=False,
                  align=False)
    tokens = tmp_path / "tokens"
    assert main(["lm", "tokenize", "--data", str(tmp_path / "fisher"), "--out", str(tokens),
                 "--tokenizer", str(text_model[1]), "--workers", "1", "--quiet"]) == 0
    shards = open_shards(tokens)
    assert shards.items[0]["channels"] == 2 and shards.items[0]["words"] == []
    with pytest.raises(VoxlmError, match="has word timings, and --mode duplex places text by"):
        LMData(shards, config_for_shards(lm_config("tiny"), shards), LayoutConfig(mode="duplex"), 2)


def test_librilight_tokens_train_with_fsdp_under_torchrun(imported, text_model, tmp_path, capsys):
    corpus = imported["librilight"][0]
    tokenizer, model_path = text_model
    tokens = tmp_path / "tokens"
    assert main(["lm", "tokenize", "--data", str(corpus), "--out", str(tokens), "--tokenizer",
                 str(model_path), "--workers", "1", "--quiet"]) == 0
    assert tokenizer.vocab_size == json.loads((tokens / "tokens.json").read_text())["tokenizer"]["vocab_size"]
    capsys.readouterr()
    for mode in ("aligned", "interleave", "duplex"):  # no word timings: these layouts refuse it
        assert main(["lm", "train", "--data", str(tokens), "--out", str(tmp_path / "no"),
                     "--mode", mode, "--config", "tiny", "--steps", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"has word timings, and --mode {mode} places text by them; train --mode " \
               "continuation" in err or "no two-channel dialogue items" in err, err
    assert main(["lm", "tokenize", "--data", str(corpus), "--out", str(tmp_path / "sp"),
                 "--text-vocab", "300", "--workers", "1", "--quiet"]) == 2
    assert "no train-split rows with word timings" in capsys.readouterr().err
    # with LibriSpeech (timed) beside it, as the large recipe's LM trains: aligned keeps only
    # the timed streams, interleave keeps LibriLight's as speech only
    spoken = tmp_path / "ls_tokens"
    assert main(["lm", "tokenize", "--data", str(imported["librispeech"][0]), "--out", str(spoken),
                 "--tokenizer", str(model_path), "--workers", "1", "--quiet"]) == 0
    shards = open_shards([tokens, spoken])
    config = config_for_shards(lm_config("tiny"), shards)
    unspoken = len(open_shards(tokens).items)
    timed = LMData(shards, config, LayoutConfig(mode="aligned"), batch_size=2).streams
    assert len(timed) == 3 and all(item >= unspoken for item, _ in timed)  # the 3 train utterances
    assert len(LMData(shards, config, LayoutConfig(mode="interleave"), batch_size=2).streams) == \
        unspoken + 3
    assert main(["lm", "train", "--data", str(tokens), "--data", str(spoken), "--out",
                 str(tmp_path / "mixed"), "--mode", "interleave", "--config", "tiny", "--steps", "1",
                 "--batch-size", "2", "--threads", "1", "--quiet"]) == 0
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_free_port()}",
           "-m", "voxlm", "lm", "train", "--data", str(tokens), "--out", str(run), "--fsdp",
           "--config", "tiny", "--mode", "continuation", "--steps", "2", "--batch-size", "2",
           "--save-every", "2", "--log-every", "1", "--threads", "1", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(run / "train_state.pt", weights_only=False)
    assert state["step"] == 2 and state["train_config"]["fsdp"]
    curve = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [row["step"] for row in curve] == [1, 2] and all(np.isfinite(r["loss"]) for r in curve)
    assert (run / "model.safetensors").is_file()


def test_every_case_is_a_row_of_the_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md").read_text()
    cases = [*CASES, "import-format-unknown", "import-fisher-shorten", "works-import-one-unreadable",
             "import-other-options", "lm-train-no-timings", "lm-tokenize-no-timings"]
    assert not [case for case in cases if f"`{case}`" not in text]
    assert f"**{len(cases)}** corpus-import cases" in text
