"""`voxlm demo` (voxlm/demo.py, voxlm/report_html.py) with a tiny random dialogue model written
the way `voxlm lm train --mode duplex` writes it: questions spoken by festival, stereo wavs,
transcripts, the HTML report, and the one-line errors when there is no model or no festival."""
import base64
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from duplex_helpers import export_run
from voxlm.audio import rms_db
from voxlm.cli import main
from voxlm.demo import demo_questions

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("demo_model"), "duplex")


def test_demo_end_to_end(run, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--checkpoint", str(run), "--questions", "3",
                 "--seed", "5", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    asked = demo_questions(3, 5)
    assert [q.kind for q in asked] == ["arithmetic", "arithmetic", "chitchat"]
    assert all(q.voice.startswith("festival:") for q in asked)
    page = (out / "report.html").read_text()
    for k, question in enumerate(asked, 1):
        wav = out / f"conversation_{k}.wav"
        audio, rate = sf.read(wav, dtype="float32")
        assert rate == 16000 and audio.ndim == 2 and audio.shape[1] == 2
        data = json.loads((out / f"conversation_{k}.json").read_text())
        assert data["question"] == question.text and data["user_voice"] == question.voice
        assert data["channels"] == ["user", "model"] and data["audio"] == wav.name
        spoken = audio[:round(data["user_seconds"] * rate), 0]  # the question, on channel 0
        assert rms_db(spoken) > -35.0, rms_db(spoken)  # real speech, far above silence
        assert rms_db(audio[:, 1]) > -60.0  # the model's voice on channel 1
        assert [w["w"].lower() for w in data["user_words"]][:2] == \
               [w.strip("?,.").lower() for w in question.text.split()[:2]]
        assert all(w["start"] <= w["end"] for w in data["words"])
        assert " ".join(w["w"] for w in data["words"]) == data["text"]
        assert data["latency_ms"]["step"]["mean_ms"] > 0 and data["real_time_factor"] > 0
        assert f'<audio controls preload="none" src="{wav.name}">' in page
        assert str(wav) in printed.out  # the summary line names the wav
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    cells = re.findall(r'data-stage="(\w+)" data-stat="(\w+)">([-\d.]+)<', page)
    assert {(stage, stat) for stage, stat, _ in cells} == {
        (stage, stat) for stage in ("encode", "lm", "decode", "step") for stat in ("mean_ms", "p95_ms")}
    assert len(cells) == 3 * 8 and all(float(ms) > 0 for _, _, ms in cells)
    assert "voxlm serve" in page and "http://127.0.0.1:8998/" in page
    assert f"report: {out / 'report.html'}" in printed.out and "voxlm serve" in printed.out
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def _one_line_error(capsys, code) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("voxlm: error: "), lines
    return lines[0]


def test_demo_without_a_model(tmp_path, capsys, monkeypatch):
    """No shipped model (the default path points at nothing) and no --checkpoint: one line
    that names the missing file and the fix, before any work."""
    import voxlm.dialogue

    missing = tmp_path / "assets" / "dialogue.safetensors"
    monkeypatch.setattr(voxlm.dialogue, "default_dialogue_path", lambda: missing)
    line = _one_line_error(capsys, main(["demo", "--out", str(tmp_path / "demo")]))
    assert "no dialogue model ships yet" in line and str(missing) in line
    assert "--mode duplex" in line and "--checkpoint" in line
    assert not (tmp_path / "demo").exists()


def test_demo_bad_input(run, tmp_path, capsys, monkeypatch):
    line = _one_line_error(capsys, main(["demo", "--out", str(tmp_path), "--checkpoint",
                                         str(run), "--questions", "0"]))
    assert "--questions 0" in line and "pass 1 to 20" in line
    monkeypatch.setattr("voxlm.demo.shutil.which", lambda name: None)  # no festival
    line = _one_line_error(capsys, main(["demo", "--out", str(tmp_path), "--checkpoint",
                                         str(run)]))
    assert "festival" in line and "bash scripts/install-system.sh" in line
    assert list(tmp_path.iterdir()) == []


def test_plot_takes_any_inner_text():
    """An untrained model's inner text holds "$" (matplotlib's mathtext) and control bytes:
    the plot draws them as text, and the terminal and page get printable characters."""
    from voxlm.report_html import plot_conversation, printable

    audio = np.zeros((16000, 2), np.float32)
    audio[:8000, 0] = 0.1 * np.sin(np.arange(8000) / 5.0)
    words = [{"w": w, "start": 0.1 * k, "end": 0.1 * k + 0.08}
             for k, w in enumerate(["a$b", "$x^2$", "\x07\x0f", "ok"])]
    png = plot_conversation(audio, words[:1], words, 0.5, "what is $5?")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert printable("a\x07b") == "a\ufffdb" and printable("abcdef", 4) == "abc\u2026"
