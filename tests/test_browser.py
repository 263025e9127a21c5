"""The browser page end to end: headless Debian chromium driven by Playwright, a fake microphone
playing a spoken question (eSpeak NG), a real server on loopback with a tiny random dialogue
model whose text head favours word pieces. The page must send the microphone's audio, receive
and play the model's audio, and show exactly the inner text the server sent."""
import shutil
from pathlib import Path

import pytest
import torch

from duplex_helpers import HOP, tiny_model

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: install Debian's chromium (scripts/install-system.sh)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright (the dev extra)")
pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")
from voxlm.server import BackgroundServer, DialogueServer, ServerConfig  # noqa: E402

torch.set_num_threads(1)
QUESTION = "What is two plus three?"


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    """QUESTION spoken by eSpeak NG, then a second of silence: a 16 kHz 16-bit wav."""
    import numpy as np

    from voxlm.audio import save_audio
    from voxlm.synth.engines import get_engine, parse_voice

    if shutil.which("espeak-ng") is None:
        pytest.skip("no espeak-ng: install it (scripts/install-system.sh)")
    engine = get_engine("espeak")
    try:
        spoken = engine.speak(QUESTION, parse_voice("espeak:en-us+m1")).audio
    finally:
        engine.close()
    path = tmp_path_factory.mktemp("browser") / "question.wav"
    save_audio(path, np.concatenate([spoken, np.zeros(16000, np.float32)]))
    return path


def test_page_talks_to_the_server(question, tmp_path):
    server = DialogueServer(tiny_model(tmp_path, listen=True),  # a listen head: "heard" words
                            ServerConfig(port=0, max_sessions=2))
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={question}", "--autoplay-policy=no-user-gesture-required",
             "--no-sandbox", "--mute-audio"]
    with BackgroundServer(server) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=flags)
        try:
            page = browser.new_page()
            problems = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(url)
            assert page.text_content("#status") == "idle"
            assert not page.is_visible("#heard-section")  # shown once a heard word arrives
            page.click("#start")
            page.wait_for_function("window.voxlm.ready", timeout=15000)
            # two seconds of the model's audio and some of its text, while the microphone talks
            page.wait_for_function("window.voxlm.audioSamples >= 32000 && window.voxlm.text.length"
                                   " > 0 && window.voxlm.sentSamples >= 16000", timeout=20000)
            page.wait_for_function("window.voxlm.rttMs !== null && window.voxlm.bufferMs !== null",
                                   timeout=5000)
            page.wait_for_function("window.voxlm.heard.length > 0", timeout=10000)
            latency = page.text_content("#latency")
            page.click("#stop")
            page.wait_for_function("window.voxlm.ended !== null && !window.voxlm.ready",
                                   timeout=10000)
            state = page.evaluate("window.voxlm")
            shown = page.text_content("#transcript")
            heard = page.text_content("#heard") if page.is_visible("#heard-section") else None
            status = page.text_content("#status")
        finally:
            browser.close()
    summary = server.finished[-1]
    assert problems == [] and state["errors"] == [], (problems, state["errors"])
    assert state["ended"] == "stopped by the client" and status.startswith("ended")
    assert shown.strip() and shown == state["text"] == summary["text"]  # all of it, in order
    assert state["audioSamples"] == state["audioMessages"] * HOP
    assert state["audioMessages"] == summary["frames_sent"]
    assert summary["input_samples"] >= 16000 and summary["input_peak"] > 0.05  # the question
    assert "round trip" in latency and " ms" in latency
    assert heard == " ".join(state["heard"]) and heard.strip()  # every word the server sent
    print(f"browser: {state['audioMessages']} frames received, {state['sentSamples']} samples sent, "
          f"text {shown[:40]!r}..., {latency}, input peak {summary['input_peak']}")
