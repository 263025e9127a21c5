"""`voxlm demo`, the main job of the README's first command: talk to the shipped dialogue model.

    report = run_demo("voxlm-demo", questions=3)   # -> voxlm-demo/report.html

It speaks a few short questions in a festival voice (held out: no model was trained on it), two
arithmetic ones phrased as the training QA and one chitchat opener, runs a full-duplex
conversation on each (`chat.chat`, the runtime `voxlm serve` runs, int8 LM by default), and
writes per conversation a stereo wav (channel 0 the user, 1 the model) and a transcript JSON,
then one HTML report (`report_html.py`) with both channels' waveforms and spectrograms, the
model's inner text on a timeline, the latency per stage and how to talk to the model live.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from .errors import VoxlmError

MAX_QUESTIONS = 20
ANSWER_SECONDS = 10.0  # longest answer time after each question (the model usually stops sooner)
MAX_OPERAND = 12  # arithmetic operands 0..12, as in the training dialogues (DialogueConfig)
SERVE_URL = "http://127.0.0.1:8998/"  # where `voxlm serve` listens by default
CHITCHAT = ("Hi there, how are you doing today?", "What did you do this weekend?",
            "Do you have any plans for tonight?", "I just got back from a long walk.",
            "Have you seen any good movies lately?")
INSTALL_FIX = "run `bash scripts/install-system.sh` (it installs festival and its voices)"


class Question(NamedTuple):
    kind: str  # "arithmetic" or "chitchat"
    text: str  # what the user says
    expected: str | None  # the answer the training dialogues give (None for chitchat)
    voice: str  # festival voice id, e.g. "festival:kal_diphone"


class Conversation(NamedTuple):
    question: Question
    wav: Path  # stereo 16 kHz: channel 0 the user, 1 the model
    transcript: Path  # JSON: question, user words, the model's inner text with times, latency
    user_words: list  # [{"w", "start", "end"}] the question's words, seconds
    user_seconds: float  # the question's length
    result: object  # chat.ChatResult
    real_time_factor: float  # mean step time over the frame's duration (below 1: real time)


def demo_questions(count: int, seed: int = 0) -> list:
    """`count` questions: two arithmetic, then one chitchat opener, repeated; festival voices
    alternate."""
    from .synth.engines import FESTIVAL_VOICES
    from .synth.text import arithmetic_pair

    rng = random.Random(seed)
    chitchat = rng.sample(CHITCHAT, len(CHITCHAT))
    out = []
    for k in range(count):
        voice = f"festival:{FESTIVAL_VOICES[k % len(FESTIVAL_VOICES)]}"
        if k % 3 == 2:
            out.append(Question("chitchat", chitchat[(k // 3) % len(chitchat)], None, voice))
        else:
            question, answer = arithmetic_pair(rng, MAX_OPERAND)
            out.append(Question("arithmetic", question, answer, voice))
    return out


def check_ready(checkpoint=None):
    """Fail early, in one line: no dialogue model to run, or no festival to speak with."""
    from .dialogue import TRAIN_FIX, default_dialogue_path

    if checkpoint is None and not default_dialogue_path().exists():
        raise VoxlmError(f"no dialogue model ships yet ({default_dialogue_path()} is missing)",
                         TRAIN_FIX)
    if shutil.which("text2wave") is None:
        raise VoxlmError("festival (`text2wave`) is not installed: the demo's questions are "
                         "spoken in its held-out voices", INSTALL_FIX)


def speak_questions(questions: list) -> list:
    """[synth.engines.Speech] of each question, 16 kHz float32."""
    from .synth.engines import get_engine

    engine = get_engine("festival")
    try:
        return [engine.speak(q.text, q.voice) for q in questions]
    finally:
        engine.close()


def _words(words) -> list:
    return [{"w": w.w, "start": round(float(w.start), 3), "end": round(float(w.end), 3)}
            for w in words]


def converse(model, question: Question, speech, out: Path, index: int, options,
             seed: int) -> Conversation:
    """One conversation: the question's speech through `chat`, its wav and transcript."""
    from .audio import SAMPLE_RATE, save_audio
    from .chat import chat
    from .data import write_json

    result = chat(model, speech.audio, options, seed)
    frame_ms = 1000.0 * model.codec.config.hop / SAMPLE_RATE  # 80 ms
    rtf = result.latency["step"]["mean_ms"] / frame_ms
    wav = save_audio(out / f"conversation_{index}.wav", result.audio)
    transcript = write_json(out / f"conversation_{index}.json", {
        "audio": wav.name, "sample_rate": SAMPLE_RATE, "channels": ["user", "model"],
        "seconds": round(len(result.audio) / SAMPLE_RATE, 3),
        "question": question.text, "kind": question.kind, "expected_answer": question.expected,
        "user_voice": question.voice, "user_seconds": round(speech.duration, 3),
        "user_words": _words(speech.words), "text": result.text, "words": _words(result.words),
        "latency_ms": result.latency, "real_time_factor": round(rtf, 4), "int8": options.int8,
        "seed": seed, "model": model.info()})
    return Conversation(question, wav, transcript, _words(speech.words), speech.duration, result,
                        rtf)


def summary(k: int, count: int, conv: Conversation) -> str:
    """The terminal's lines for one conversation: its wav, the question, the model's text."""
    from .audio import SAMPLE_RATE
    from .report_html import printable

    result = conv.result
    return (f"[{k}/{count}] {conv.wav.resolve()}\n"
            f"    you ({conv.question.voice}): {conv.question.text}\n"
            f"    model: {printable(result.text.strip(), 200) or '(no inner text)'}\n"
            f"    {len(result.audio) / SAMPLE_RATE:.1f} s, {result.latency['step']['mean_ms']:.1f} "
            f"ms per 80 ms frame (real-time factor {conv.real_time_factor:.2f})")


def run_demo(out="voxlm-demo", checkpoint=None, questions: int = 3, seed: int = 0,
             int8: bool = True, progress: bool = True) -> Path:
    """Synthesize `questions` questions, talk to the dialogue model (None: the shipped one)
    about each, write wavs, transcripts and report.html in `out`; print where they are.
    -> the report's path."""
    from tqdm import tqdm

    from .chat import ChatOptions
    from .dialogue import load_dialogue_model
    from .report_html import write_demo_report

    if not 1 <= questions <= MAX_QUESTIONS:
        raise VoxlmError(f"--questions {questions}", f"pass 1 to {MAX_QUESTIONS}")
    check_ready(checkpoint)
    out = Path(out)
    t0 = time.perf_counter()
    model = load_dialogue_model(checkpoint)
    asked = demo_questions(questions, seed)
    speech = speak_questions(asked)
    conversations = []
    bar = tqdm(list(zip(asked, speech)), desc="conversations", unit="conv", disable=not progress)
    for k, (question, spoken) in enumerate(bar, 1):
        options = ChatOptions(max_seconds=spoken.duration + ANSWER_SECONDS, int8=int8)
        conv = converse(model, question, spoken, out, k, options, seed + k)
        conversations.append(conv)
        tqdm.write(summary(k, questions, conv))
    seconds = time.perf_counter() - t0
    report = write_demo_report(out / "report.html", conversations, model.info(),
                               {"int8": int8, "seed": seed, "wall_seconds": round(seconds, 1),
                                "serve_url": SERVE_URL})
    print(f"\nvoxlm demo: {len(conversations)} conversations in {seconds:.0f} s\n"
          f"report: {report.resolve()} (open it in a browser: plots, audio, inner text, latency)\n"
          f"wavs and transcripts: {out.resolve()}/conversation_*.wav|.json "
          "(channel 0 (left) you, channel 1 (right) the model)\n"
          f"talk to it live: `voxlm serve`, then open {SERVE_URL}")
    return report
