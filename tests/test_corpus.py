"""`voxlm synth corpus`: real synthesis, manifests, speaker-disjoint splits, kill and resume."""
import os
import signal
import subprocess
import sys
import time

import pytest

from voxlm.audio import load_audio
from voxlm.data import read_manifest
from voxlm.errors import VoxlmError
from voxlm.synth.corpus import CorpusConfig, choose_voices, synthesize_corpus
from voxlm.synth.engines import voice_split

FAST = dict(engines=("espeak", "flite"), sources=("qa",), workers=2)


def test_tiny_corpus_has_valid_rows_audio_and_timings(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("The garden is full of roses.\n\n   \nI paid 12 dollars for lunch.\n")
    config = CorpusConfig(minutes=0.4, text_files=(str(text),), augment=0.5, **FAST)
    rows = read_manifest(synthesize_corpus(tmp_path / "c", config, progress=False))
    assert sum(r["duration"] for r in rows) >= 24.0
    assert {r["engine"] for r in rows} <= {"espeak", "flite"}
    assert {r["source"] for r in rows} <= {"qa", "file"}
    assert any("twelve dollars" in r["text"] for r in rows if r["source"] == "file") or \
        all(r["source"] != "file" or "roses" in r["text"] for r in rows)
    for r in rows:
        audio = load_audio(tmp_path / "c" / r["audio"])
        assert abs(len(audio) / 16000 - r["duration"]) < 0.01
        assert r["words"] and r["words"][-1]["end"] <= r["duration"] + 1e-3
        assert [w["start"] for w in r["words"]] == sorted(w["start"] for w in r["words"])
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_splits_are_speaker_disjoint_and_festival_is_held_out():
    voices = choose_voices(CorpusConfig(engines=("espeak", "flite", "piper", "kokoro", "festival")))
    splits = {v.id: voice_split(v) for v in voices}
    assert len(voices) >= 16 and len({v.engine for v in voices}) >= 3
    assert {splits[v.id] for v in voices if v.engine == "festival"} == {"test"}
    for engine in ("espeak", "flite", "kokoro"):
        got = [splits[v.id] for v in voices if v.engine == engine]
        assert got.count("valid") == 1 and got.count("test") == 1
    assert splits["piper:joe"] == "train"


def test_voice_count_spreads_over_engines():
    voices = choose_voices(CorpusConfig(voices=5, engines=("espeak", "flite", "kokoro")))
    assert len(voices) == 5 and {v.engine for v in voices} == {"espeak", "flite", "kokoro"}
    # a few voices per engine still hold speakers out, with the split they have everywhere
    voices = choose_voices(CorpusConfig(voices=9, engines=("espeak", "flite", "kokoro")))
    assert [voice_split(v) for v in voices].count("test") == 3
    assert [voice_split(v) for v in voices].count("train") == 3


def _cli(out, minutes):
    return [sys.executable, "-m", "voxlm", "synth", "corpus", "--out", str(out), "--minutes",
            str(minutes), "--engines", "espeak,flite", "--sources", "qa", "--quiet"]


def test_killed_run_resumes_without_duplicates_or_holes(tmp_path):
    out = tmp_path / "c"
    proc = subprocess.Popen(_cli(out, 1.0), start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("audio/*.json"))) < 4:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers die mid-item
    proc.wait()
    before = {p.name: p.read_bytes() for p in out.glob("audio/*.json")}
    assert 4 <= len(before) and not (out / "manifest.jsonl").exists()
    assert len(list(out.glob("audio/*.wav"))) >= len(before)
    (out / "audio" / ".0000999.wav.abc.tmp").write_bytes(b"half")  # as a kill mid-write leaves
    subprocess.run(_cli(out, 1.0), check=True)
    assert not list(out.glob("audio/.*.tmp")), "the resumed run clears temp files of the kill"
    rows = read_manifest(out / "manifest.jsonl")
    ids = [int(r["id"]) for r in rows]
    assert ids == list(range(len(ids))), "ids must be unique and contiguous"
    assert sum(r["duration"] for r in rows) >= 60.0
    for name, data in before.items():  # finished items are kept as they were
        assert (out / "audio" / name).read_bytes() == data
    # an uninterrupted run with the same settings makes the same items (eSpeak NG's output
    # varies by a few ms from call to call, so durations match only closely)
    fresh = read_manifest(synthesize_corpus(tmp_path / "fresh", CorpusConfig(minutes=0.2, **FAST),
                                            progress=False))
    by_id = {r["id"]: r for r in rows}
    for r in fresh:
        assert by_id[r["id"]]["text"] == r["text"] and by_id[r["id"]]["speaker"] == r["speaker"]
        assert abs(by_id[r["id"]]["duration"] - r["duration"]) < 0.1


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    synthesize_corpus(tmp_path / "c", CorpusConfig(minutes=0.05, **FAST), progress=False)
    with pytest.raises(VoxlmError, match="other settings"):
        synthesize_corpus(tmp_path / "c", CorpusConfig(minutes=0.05, seed=3, **FAST), progress=False)


@pytest.mark.parametrize("args, message", [
    (["--engines", "espeak,nosuch"], "unknown engine 'nosuch'"),
    (["--minutes", "0"], "must be positive"),
    (["--voices", "0"], "at least one voice"),
    (["--text", "/nonexistent/lines.txt"], "no such text file"),
])
def test_bad_corpus_flags_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "voxlm", "synth", "corpus", "--out",
                           str(tmp_path / "c"), "--quiet", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
