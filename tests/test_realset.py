"""voxlm.synth.realset: the Asterisk prompts as a real-speech test set."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxlm.audio import SAMPLE_RATE, load_audio
from voxlm.data import check_row, read_manifest
from voxlm.errors import VoxlmError
from voxlm.synth import realset

needs_asterisk = pytest.mark.skipif(
    not Path(realset.SOUNDS_DIR).is_dir() or not Path(realset.TRANSCRIPTS).is_file(),
    reason=f"needs the Debian packages {realset.PACKAGES}")


@needs_asterisk
def test_build_limit_5(tmp_path):
    manifest = realset.build_realset(tmp_path, limit=5)
    assert manifest == tmp_path / "manifest.jsonl"
    rows = read_manifest(manifest)
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    for n, row in enumerate(rows, 1):
        check_row(row, f"row {n}", tmp_path)
        assert row["engine"] == "real" and row["split"] == "test" and row["words"] == []
        assert row["speaker"] == "asterisk:allison" and row["source"] == "asterisk"
        assert row["text"] and "[" not in row["text"]
        path = tmp_path / row["audio"]
        info = sf.info(path)
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert row["duration"] == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-3)
        original = Path(realset.SOUNDS_DIR) / Path(row["audio"]).relative_to("audio")
        assert row["duration"] == pytest.approx(sf.info(original).duration, abs=2e-3)
        assert np.abs(load_audio(path)).max() > 0.01  # speech, not silence


@needs_asterisk
def test_resume_keeps_existing_wavs(tmp_path):
    first = read_manifest(realset.build_realset(tmp_path, limit=3))
    wav = tmp_path / first[0]["audio"]
    stamp = wav.stat().st_mtime_ns
    rows = read_manifest(realset.build_realset(tmp_path, limit=4))
    assert wav.stat().st_mtime_ns == stamp  # not rewritten
    assert rows[:3] == first and len(rows) == 4


@needs_asterisk
def test_all_prompts_have_spoken_text():
    items = realset.prompts(realset.SOUNDS_DIR, realset.TRANSCRIPTS)
    assert len(items) > 300
    names = {name for name, _, _ in items}
    assert "auth-thankyou" in names and "digits/7" in names
    assert not names & {"beep", "ascending-2tone", "silence/1", "tt-monkeys", "confbridge-join"}
    for name, wav, text in items:
        assert wav.is_file() and text == text.strip() and not set(text) & set("[]()<>*#0123456789")


@pytest.mark.parametrize("raw,spoken", [
    ("[ascending tones]", ""),
    ("(10 seconds of silence)", ""),
    ("<beep ascending>", ""),
    ("at [@]", "at"),
    ("Thank you.", "Thank you."),
    ("press * to toggle pause, press # to exit", "press star to toggle pause, press pound to exit"),
    ("Dial 2 now. (simple tone sound plays)", "Dial two now."),
])
def test_spoken_transcript(raw, spoken):
    assert realset.spoken_transcript(raw) == spoken


def test_transcripts_skip_missing_wavs_and_markup(tmp_path):
    sounds = tmp_path / "sounds"
    (sounds / "digits").mkdir(parents=True)
    tone = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000)).astype(np.float32)
    for name in ("hello", "beep", "digits/1"):
        sf.write(sounds / f"{name}.wav", tone, 8000, subtype="PCM_16")
    transcripts = tmp_path / "t.txt.gz"
    with gzip.open(transcripts, "wt") as f:
        f.write("; comment: not a prompt\n\nhello: Hello there.\nbeep: [a beep]\n"
                "digits/1: one\nmissing: I have no wav.\n")
    manifest = realset.build_realset(tmp_path / "out", sounds, transcripts)
    rows = read_manifest(manifest)
    assert [(r["id"], r["audio"], r["text"]) for r in rows] == [
        ("asterisk-hello", "audio/hello.wav", "Hello there."),
        ("asterisk-digits-1", "audio/digits/1.wav", "one")]
    assert all(r["duration"] == 1.0 for r in rows)  # 8000 samples at 8 kHz, now 16000 at 16 kHz
    assert sf.info(tmp_path / "out" / "audio" / "digits" / "1.wav").frames == SAMPLE_RATE


def test_missing_packages_name_them(tmp_path):
    with pytest.raises(VoxlmError, match="apt-get install asterisk-core-sounds-en"):
        realset.build_realset(tmp_path / "out", sounds_dir=tmp_path / "nope")
    (tmp_path / "s").mkdir()
    sf.write(tmp_path / "s" / "a.wav", np.zeros(100, np.float32), 8000)
    with pytest.raises(VoxlmError, match=r"nope\.txt\.gz.*apt-get install"):
        realset.build_realset(tmp_path / "out", tmp_path / "s", tmp_path / "nope.txt.gz")
    assert not (tmp_path / "out").exists()
