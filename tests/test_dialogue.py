"""Two-channel dialogue synthesis with real (fast) engines: layout, timings, events, resume."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from voxlm.audio import SAMPLE_RATE, load_audio
from voxlm.data import SPLITS, read_manifest
from voxlm.synth.dialogue import DialogueConfig, make_dialogue, synthesize_dialogues
from voxlm.synth.engines import parse_voice, voice_split
from voxlm.turntaking import turn_events

ASSISTANT = "espeak:en-us+m1"
# small dialogues with every event forced to happen often
CONFIG = DialogueConfig(seed=3, assistant_voice=ASSISTANT, user_engines=("espeak", "flite"),
                        engine_weights=(1.0, 1.0), qa_share=0.34, qa_exchanges=(2, 2),
                        chitchat_turns=(3, 4), interrupt_prob=1.0, interrupt_min_turn_s=1.5,
                        interrupt_after_s=0.5, interrupt_before_s=0.4, backchannel_prob=1.0,
                        backchannel_min_turn_s=1.0)
COUNT = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("dialogues")
    manifest = synthesize_dialogues(out, COUNT, CONFIG, workers=2, progress=False)
    return out, manifest, read_manifest(manifest)


def test_layout_rows_and_voices(corpus):
    out, manifest, rows = corpus
    assert manifest == out / "manifest.jsonl"
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == COUNT
    for row in rows:
        info = sf.info(str(out / row["audio"]))
        assert (info.channels, info.samplerate) == (2, SAMPLE_RATE)
        assert abs(info.frames / SAMPLE_RATE - row["duration"]) < 1e-3
        assert json.loads((out / "dialogues" / f"{row['id']}.json").read_text()) == row
        assert row["assistant_voice"] == ASSISTANT
        assert row["speaker"] == f"{row['user_voice']}|{ASSISTANT}"
        assert row["engine"] == f"{row['user_voice'].split(':')[0]}+espeak"
        assert row["split"] in SPLITS and row["split"] == voice_split(parse_voice(row["user_voice"]))
        assert row["source"] in ("chitchat", "qa")
        lines = row["text"].split("\n")
        assert len(lines) == len(row["turns"])
        assert all(line.startswith(("user: ", "assistant: ")) for line in lines)
        assert [t["start"] for t in row["turns"]] == sorted(t["start"] for t in row["turns"])
        assert row["turns"][0]["channel"] == 0  # the user opens
    assert not list((out / "dialogues").glob(".*"))  # no temp files left behind


def test_words_lie_on_speech_of_their_channel(corpus):
    out, _, rows = corpus
    hits = total = 0
    for row in rows:
        stereo = load_audio(out / row["audio"], mono=False)  # [T, 2]
        words = row["words"]
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert sum(len(t["words"]) for t in row["turns"]) == len(words)
        for w in words:
            assert 0.0 <= w["start"] < w["end"] <= row["duration"]
            mid = int((w["start"] + w["end"]) / 2 * SAMPLE_RATE)
            win = stereo[max(mid - 400, 0): mid + 400]  # 50 ms around the midpoint
            rms = np.sqrt(np.mean(np.square(win), axis=0))
            total += 1
            hits += rms[w["channel"]] > 0.01
    assert hits / total > 0.95, (hits, total)


def test_gaps_overlaps_backchannels_interruptions(corpus):
    out, _, rows = corpus
    kinds = [e.kind for row in rows for e in turn_events(load_audio(out / row["audio"], mono=False))]
    assert "gap" in kinds and "overlap" in kinds
    turns = [t for row in rows for t in row["turns"]]
    backchannels = [t for t in turns if t["kind"] == "backchannel"]
    assert backchannels and all(len(t["words"]) == 1 for t in backchannels)
    cut = [(row, k) for row in rows for k, t in enumerate(row["turns"]) if t["interrupted"]]
    assert cut
    for row, k in cut:
        turn = row["turns"][k]
        assert turn["channel"] == 1 and turn["kind"] == "turn"
        assert turn["words"][-1]["end"] <= turn["end"] + 1e-6
        assert turn["text"].split()[-1].strip(".,!?") == turn["words"][-1]["w"]
        # the user started before the cut, within the reaction window
        user = [t for t in row["turns"][k + 1:] if t["channel"] == 0 and t["kind"] == "turn"][0]
        assert 0.1 <= turn["end"] - user["start"] <= 1.0
        stereo = load_audio(out / row["audio"], mono=False)
        after = stereo[int((turn["end"] + 0.05) * SAMPLE_RATE): int((turn["end"] + 0.5) * SAMPLE_RATE), 1]
        assert np.abs(after).max() < 1e-3  # the assistant is silent after its cut


def _skeleton(row):
    """What (seed, index) fixes even though eSpeak NG timings wobble by a few ms per call."""
    main = [t for t in row["turns"] if t["kind"] == "turn"]
    return (row["id"], row["speaker"], row["split"], row["source"], row["engine"],
            [t["channel"] for t in main], main[0]["text"])


def test_make_dialogue_is_deterministic():
    config = DialogueConfig(seed=11, assistant_voice=ASSISTANT, user_engines=("espeak",),
                            engine_weights=(1.0,), qa_share=1.0, qa_exchanges=(1, 2))
    a, row_a = make_dialogue(5, config)
    b, row_b = make_dialogue(5, config)
    assert a.ndim == 2 and a.shape[1] == 2 and a.dtype == np.float32
    assert abs(len(a) - len(b)) < 0.1 * SAMPLE_RATE
    assert _skeleton(row_a) == _skeleton(row_b)
    assert row_a["source"] == "qa" and row_a["id"] == "dialogue-000005"
    other = make_dialogue(6, config)[1]
    assert other["id"] == "dialogue-000006"


def test_resume_regenerates_only_missing(corpus, tmp_path):
    src, _, rows = corpus
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    folder = out / "dialogues"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    (folder / "dialogue-000001.json").unlink()  # killed after the wav, before its sidecar
    (folder / "dialogue-000002.json").unlink()  # killed before anything of it was written
    (folder / "dialogue-000002.wav").unlink()
    (folder / ".dialogue-000002.wav.abc.tmp").write_bytes(b"partial")  # a killed temp write
    os.utime(folder / "dialogue-000000.wav", ns=(1, 1))
    manifest = synthesize_dialogues(out, COUNT, CONFIG, workers=1, progress=False)
    again = read_manifest(manifest)
    assert [r["id"] for r in again] == [r["id"] for r in rows]  # no duplicates or holes
    assert again[0] == rows[0]  # the kept dialogue is read back as it was
    assert [_skeleton(r) for r in again] == [_skeleton(r) for r in rows]
    assert (folder / "dialogue-000000.wav").stat().st_mtime_ns == 1  # untouched
    assert (folder / "dialogue-000001.wav").stat().st_mtime_ns != stamps["dialogue-000001.wav"]
    assert not list(folder.glob(".*"))
    for row in again:
        assert abs(sf.info(str(out / row["audio"])).frames / SAMPLE_RATE - row["duration"]) < 1e-3


def test_qa_share_and_weights_choose_the_questions():
    """--qa-share 1 --qa-weights 1,0,0,0: every dialogue is QA and every question arithmetic on
    0..max_operand; the default odds still mix the four kinds."""
    import random
    import re

    from voxlm.synth.dialogue import ASSISTANT, USER, _plan
    from voxlm.synth.text import number_words

    numbers = {number_words(k) for k in range(13)}
    config = DialogueConfig(qa_share=1.0, qa_weights=(1, 0, 0, 0))
    for seed in range(40):
        kind, plan = _plan(random.Random(seed), config)
        assert kind == "qa" and [ch for ch, _ in plan[:2]] == [USER, ASSISTANT]
        for channel, text in plan[::2]:
            a, op, b = re.search(r"(\w+) (plus|minus|times) (\w+)\?$", text).groups()
            assert {a, b} <= numbers
    mixed = [_plan(random.Random(seed), DialogueConfig(qa_share=1.0))[1] for seed in range(60)]
    questions = [text for plan in mixed for _, text in plan[::2]]
    assert any("spell" in q for q in questions) and any(" plus " in q or " minus " in q
                                                       or " times " in q for q in questions)
    assert all(_plan(random.Random(s), DialogueConfig(qa_share=0.0))[0] == "chitchat"
               for s in range(5))


def test_user_shift_moves_training_voices_only():
    """--user-shift: the same dialogue (voices, texts, turns) with the training user voice's pitch
    moved by the cents it records; a held-out voice's dialogue comes out as without the shift."""
    from dataclasses import replace

    from voxlm.pitch import pitch_track

    config = replace(CONFIG, qa_share=1.0, qa_exchanges=(1, 1), interrupt_prob=0.0,
                     backchannel_prob=0.0)
    shifted = replace(config, user_shift=4.0)
    seen = set()
    for index in range(12):
        plain_audio, plain = make_dialogue(index, config)
        audio, row = make_dialogue(index, shifted)
        split = voice_split(parse_voice(row["user_voice"]))
        assert (row["user_voice"], row["text"]) == (plain["user_voice"], plain["text"])
        cents = row.get("user_shift_cents")
        if split != "train":
            assert cents is None and "user_shift_cents" not in plain
            seen.add("held out")
            continue
        assert cents is not None and -400 <= cents <= 400 and "user_shift_cents" not in plain
        if abs(cents) < 150:
            continue
        f0 = [np.median(track[0][track[1]]) for track in
              (pitch_track(plain_audio[:, 0]), pitch_track(audio[:, 0]))]
        measured = 1200 * np.log2(f0[1] / f0[0])
        assert abs(measured - cents) < 60, (row["user_voice"], cents, measured)
        for turn, before in zip(row["turns"], plain["turns"]):  # duration kept: the same timing
            assert abs(turn["start"] - before["start"]) < 0.1 and abs(turn["end"] - before["end"]) < 0.1
        seen.add("train")
    assert seen == {"train", "held out"}


def test_speaker_turns_cut_one_voice_out_of_dialogues(corpus, tmp_path, capsys):
    """`voxlm synth turns`: every assistant turn is an item of that channel's samples, its words
    on the item's clock and lying on its speech, its split kept; resuming cuts nothing again;
    a speaker no manifest has is a clear error."""
    from voxlm.cli import main
    from voxlm.synth.turns import BEFORE_S, speaker_turns

    out, _, rows = corpus
    manifest = speaker_turns([out], tmp_path / "voice", ASSISTANT, channel=1, progress=False)
    items = read_manifest(manifest)
    turns = [(r, i, t) for r in rows for i, t in enumerate(r["turns"]) if t["channel"] == 1]
    assert len(items) == len(turns) > 0
    for item, (row, i, turn) in zip(items, turns):
        assert item["id"] == f"{row['id']}-{i}" and item["split"] == row["split"]
        assert item["speaker"] == ASSISTANT and item["text"] == turn["text"]
        audio = load_audio(tmp_path / "voice" / item["audio"])
        stereo = load_audio(out / row["audio"], mono=False)
        start = int(round(max(0.0, turn["start"] - BEFORE_S) * SAMPLE_RATE))
        assert np.allclose(audio, stereo[start:start + len(audio), 1], atol=1e-4)
        for w in item["words"]:  # on the item's clock, on its speech
            mid = int((w["start"] + w["end"]) / 2 * SAMPLE_RATE)
            assert 0 <= w["start"] <= w["end"] <= item["duration"] + 1e-3
            assert np.sqrt(np.mean(np.square(audio[max(mid - 400, 0): mid + 400]))) > 0.005
    first = tmp_path / "voice" / items[0]["audio"]
    stamp = first.stat().st_mtime_ns
    assert main(["synth", "turns", "--data", str(out), "--out", str(tmp_path / "voice"),
                 "--speaker", ASSISTANT, "--quiet"]) == 0
    assert first.stat().st_mtime_ns == stamp and read_manifest(manifest) == items
    assert main(["synth", "turns", "--data", str(out), "--out", str(tmp_path / "none"),
                 "--speaker", "piper:nobody", "--quiet"]) != 0
    assert "no speech of 'piper:nobody'" in capsys.readouterr().err
