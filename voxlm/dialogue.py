"""Full-duplex dialogue runtime: per 80 ms frame, encode the user's frame with the streaming
codec, run one LM step (temporal + depth), decode the model's frame; sessions share the step.

    model = load_dialogue_model("runs/dialogue")     # a duplex LM, its tokenizer and codec
    runtime = DuplexRuntime(model, max_sessions=8)
    session = runtime.open()                         # a batch row of its own
    session.feed(samples)                            # float32 16 kHz, any length, any thread
    out = runtime.step()[session.id]                 # one frame for every open session
    out.audio, out.text                              # [1280] model voice; new inner text
    out.heard_word                                   # a word the listen head wrote down, if any
    runtime.close(session)                           # frees the row for the next session
    runtime.latency.summary()                        # ms per step: encode, lm, decode, step

Layout (lm/streams.py `duplex`, as the model was trained): column 0 is the start frame; audio
frame t of both channels sits at column audio_at + t, codebook k delayed by delay_k frames;
one `LMGen.step` from column c samples the model's text and audio of column c + 1, with the
user rows of column c given. audio_at = 1 + max(-text_delay, 0): when the text leads the audio,
the columns before it hold the model's first text and no audio.

Timing, per session (D = the largest acoustic delay, 1 by default):
- Its first audio_at steps are warm-up (columns without audio): they take no input and give
  silence. Afterwards the step at column c takes the user's frame t = c - audio_at, fills the
  user rows of column c (codebook k from frame t - delay_k) and samples column c + 1.
- The model's frame j can be decoded at column audio_at + j + S, where S is the largest delay
  of the codebooks the decoder reads (S = D for a codec's own decoder; S = 0 for a voice
  decoder that reads codebook 1 alone), so the step that takes the user's frame t gives the
  model's frame t + 1 - S. The layout puts the model's frame j beside the user's frame j, and
  the user's frame t is whole only when its 80 ms end: with S = 0 the model's frame t + 1 is
  ready as its place begins, so real time adds only the step and the transport to the
  layout's timing; with S = 1 its frames play one frame (80 ms) later than their place.
- A session whose input runs short gets silence for that frame (an underrun); its next frame
  waits in its buffer. `max_buffered_seconds` drops the oldest input beyond it.

Batching: the LM, encoder and decoder stream with one batch row per session slot; a session
that joins restarts its row (`StreamingModule.restart_rows`: its own rope positions and no
attention to keys from before, fresh codec states), so it gives the tokens it would give alone
and, decoded, the same audio up to the harmonic vocoder's noise phases (they follow a frame
counter the batch shares). Sampling draws from torch's one generator, so batched sampled runs
differ from solo runs; greedy ones match. Text: tokenizer ids decoded word by word (a word is a run of text tokens between
TEXT_PAD_ID / TEXT_EOW_ID frames), so pads and word starts produce no text of their own.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .errors import VoxlmError
from .lm.generate import LMGen, SamplingOptions
from .lm.model import TEXT_PAD_ID
from .lm.streams import FRAME_RATE, TEXT_OFFSET

FRAME_SAMPLES = round(SAMPLE_RATE / FRAME_RATE)  # 1280: the codec's hop, 80 ms at 16 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE  # 0.08 s
SAMPLE = -1  # in the step's forced ids: sample this token
RESTART_IDLE_EVERY = 250  # steps (20 s): idle rows restart so their positions stay small
TRAIN_FIX = ("train one with `voxlm lm train --data DIR --out runs/dialogue --mode duplex` "
             "(tokens of `voxlm synth dialogues`) and pass --checkpoint runs/dialogue")


# ---------------------------------------------------------------- the model

def default_dialogue_path() -> Path:
    return Path(__file__).resolve().parent / "assets" / "dialogue.safetensors"


@dataclass
class DialogueModel:
    """A duplex LM with what the runtime needs around it."""
    lm: object  # lm.model.LM with user_audio, trained in the duplex layout
    codec: object  # codec.model.Codec its tokens were made with
    tokenizer: object | None  # lm.tokenizer.Tokenizer of its text stream (None: no text)
    text_delay: int = 0  # frames the model's text lags its audio (< 0: leads), as trained
    path: Path | None = None  # the model file, when loaded from one
    frame_rate: float = FRAME_RATE  # Hz of its tokens
    listen_delay: int = 3  # frames its listen head's text lags the user's audio, as trained

    def __post_init__(self):
        from .lm.speech import SpeechLayout, check_codec

        if not self.lm.config.user_audio:
            raise VoxlmError("this LM has no user audio stream, so it cannot listen while it "
                             "speaks", TRAIN_FIX)
        check_codec(self.lm, self.codec, SpeechLayout(mode="duplex", frame_rate=self.frame_rate))

    @property
    def audio_at(self) -> int:  # layout column of audio frame 0
        return 1 + max(-self.text_delay, 0)

    @property
    def text_at(self) -> int:  # layout column the text of audio frame 0 would sit at
        return 1 + max(self.text_delay, 0)

    @property
    def heard_at(self) -> int:  # layout column the listen head's text of user frame 0 sits at
        return self.audio_at + self.listen_delay

    def info(self) -> dict:
        c = self.lm.config
        return {"path": str(self.path) if self.path else None, "codebooks": c.n_q,
                "frame_rate": self.frame_rate, "frame_samples": self.codec.config.hop,
                "text_delay": self.text_delay, "acoustic_delay": c.acoustic_delay,
                "listen_head": c.listen,
                "parameters": sum(p.numel() for p in self.lm.parameters()),
                "tokenizer": getattr(self.tokenizer, "name", None)}


def load_dialogue_model(checkpoint=None, codec=None, device: str = "cpu",
                        voice: bool = True) -> DialogueModel:
    """A duplex LM model file or run folder (None: the shipped default) with its tokenizer and
    codec (`codec`: a codec file instead of the one its tokens were made with). Without
    `codec`, a model that speaks the shipped codec's codes speaks through the shipped voice
    decoder (voxlm/assets/voice.safetensors) where there is one, unless `voice` is False."""
    from .codec.model import default_voice_path
    from .lm.data import LayoutConfig
    from .lm.speech import load_speech_lm

    if checkpoint is None and not default_dialogue_path().exists():
        raise VoxlmError("no dialogue model ships yet", TRAIN_FIX)
    speech = load_speech_lm(checkpoint if checkpoint is not None else default_dialogue_path(),
                            device)
    if speech.layout.mode != "duplex" or not speech.lm.config.user_audio:
        mode = speech.layout.mode or "an unrecorded"
        raise VoxlmError(f"{speech.path} is not a dialogue model: it was trained in {mode} mode, "
                         "not duplex, so it cannot listen while it speaks", TRAIN_FIX)
    if codec is None and voice and default_voice_path().exists() and speech.reads_codes_of(
            default_voice_path()):
        codec = default_voice_path()
    return DialogueModel(speech.lm, speech.codec(codec), speech.tokenizer(),
                         int(speech.extra.get("duplex_text_delay", 0)), speech.path,
                         speech.layout.frame_rate,
                         int(speech.extra.get("listen_delay", LayoutConfig.listen_delay)))


# ---------------------------------------------------------------- latency

class LatencyStats:
    """Running times of the batched step per stage, in ms: count, mean, max and last over the
    whole run, p50 and p95 over the last `window` steps."""
    STAGES = ("encode", "lm", "decode", "step")

    def __init__(self, window: int = 1000):
        self.count = 0
        self.total = dict.fromkeys(self.STAGES, 0.0)
        self.max = dict.fromkeys(self.STAGES, 0.0)
        self.recent = {stage: deque(maxlen=window) for stage in self.STAGES}

    def add(self, **ms: float):
        self.count += 1
        for stage, value in ms.items():
            self.total[stage] += value
            self.max[stage] = max(self.max[stage], value)
            self.recent[stage].append(value)

    def summary(self) -> dict:
        """{"steps": N, stage: {"mean_ms", "p50_ms", "p95_ms", "max_ms", "last_ms"}}."""
        out = {"steps": self.count}
        for stage in self.STAGES:
            recent = np.asarray(self.recent[stage] or [0.0])
            out[stage] = {"mean_ms": round(self.total[stage] / max(self.count, 1), 3),
                          "p50_ms": round(float(np.percentile(recent, 50)), 3),
                          "p95_ms": round(float(np.percentile(recent, 95)), 3),
                          "max_ms": round(self.max[stage], 3),
                          "last_ms": round(float(recent[-1]), 3)}
        return out


# ---------------------------------------------------------------- inner text

class Word(NamedTuple):
    w: str
    start: float  # seconds from the session's start: its first token's frame, text delay removed
    end: float  # seconds: the frame after its last token


def word_dicts(words) -> list:
    """[Word] -> [{"w", "start", "end"}] with times in ms precision, as transcripts store them."""
    return [{"w": w.w, "start": round(w.start, 3), "end": round(w.end, 3)} for w in words]


class TextDecoder:
    """Text stream ids -> text as it grows, word by word. A word is a run of tokenizer ids (a
    piece that starts with "▁" inside a run starts another); its text is decoded whole each time
    it grows and the new characters are passed on (an incomplete UTF-8 byte sequence waits for
    the rest). Words are joined by one space."""

    def __init__(self, tokenizer, text_at: int = 1, frame_rate: float = FRAME_RATE):
        self.tokenizer, self.text_at, self.frame_rate = tokenizer, text_at, frame_rate
        self.vocab = tokenizer.vocab_size if tokenizer is not None else 0
        self.ids, self.first, self.last = [], 0, 0  # the current word: ids, columns
        self.sent = 0  # characters of the current word passed on
        self.spoken = False  # any text passed on in this session

    def push(self, text_id: int, column: int) -> tuple:
        """One sampled text id at its layout column -> (new text, Word that ended or None)."""
        if not TEXT_OFFSET <= text_id < TEXT_OFFSET + self.vocab:  # pad, word start, none
            return self.finish()
        token = text_id - TEXT_OFFSET
        ended, word = "", None
        if self.ids and self.tokenizer.piece(token).startswith("\u2581"):  # "▁": a new word
            ended, word = self.finish()  # (a trained model puts TEXT_EOW_ID before it)
        if not self.ids:
            self.first = column
        self.ids.append(token)
        self.last = column
        return ended + self._new_text(final=False), word

    def finish(self) -> tuple:
        """End the current word: -> (its last characters, Word or None)."""
        if not self.ids:
            return "", None
        text = self._new_text(final=True)
        word = self._word_text(final=True).strip()
        start = max(self.first - self.text_at, 0) / self.frame_rate
        end = max(self.last + 1 - self.text_at, 0) / self.frame_rate
        self.ids, self.sent = [], 0
        return text, (Word(word, start, end) if word else None)

    def _word_text(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids).lstrip()
        return text if final else text.rstrip("\ufffd")

    def _new_text(self, final: bool) -> str:
        text = self._word_text(final)
        new = text[self.sent:]
        if not new:
            return ""
        gap = " " if self.spoken and self.sent == 0 else ""
        self.sent, self.spoken = len(text), True
        return gap + new


# ---------------------------------------------------------------- sessions

class FrameResult(NamedTuple):
    audio: np.ndarray  # [hop] float32: the model's voice for this frame (zeros before its first)
    text: str  # inner text produced at this step ("" when none)
    text_id: int  # text stream id sampled: TEXT_PAD_ID, TEXT_EOW_ID or tokenizer id + TEXT_OFFSET
    word: Word | None  # a word of inner text that ended at this step
    user_frame: int | None  # index of the user's frame taken at this step (None: warm-up)
    model_frame: int | None  # index of the model's frame in `audio` (None: none yet)
    column: int  # layout column of the tokens sampled at this step
    tokens: np.ndarray  # [1 + n_q] int64 the model's text and audio ids sampled for `column`
    heard_word: Word | None = None  # a word of the user's the listen head wrote down (LMConfig.listen)


class Session:
    """One conversation: a batch row of a DuplexRuntime. `feed` may be called from any thread."""

    def __init__(self, runtime: "DuplexRuntime", session_id: str, row: int):
        c, depth = runtime.config, runtime.depth
        self.id, self.row = session_id, row
        self.column = 0  # next layout column to step from
        start = np.array([c.text_start_id] + [c.audio_pad_id] * c.n_q, np.int64)
        self.model = deque([start], maxlen=depth + 1)  # [1 + n_q] model tokens of recent columns
        self.user = deque(maxlen=depth + 1)  # [n_q] codes of the user's recent frames
        self.user_frames = 0  # user frames taken so far
        self.fresh = {"lm", "encoder", "decoder"}  # parts whose batch row restarts at first use
        self.text = TextDecoder(runtime.model.tokenizer, runtime.model.text_at,
                                runtime.model.frame_rate)
        self.heard = (TextDecoder(runtime.model.tokenizer, runtime.model.heard_at,
                                  runtime.model.frame_rate) if c.listen else None)
        self.hop = runtime.hop
        self.max_buffered = runtime.max_buffered
        self.received = self.underruns = self.dropped = 0  # samples; frames; samples
        self.closed = False
        self._pending = np.zeros(0, np.float32)  # input not yet taken
        self._lock = threading.Lock()

    def feed(self, samples):
        """Queue the user's audio: [N] float32 16 kHz in [-1, 1] (NaN/inf become silence)."""
        samples = np.nan_to_num(np.asarray(samples, np.float32).reshape(-1), nan=0.0,
                                posinf=0.0, neginf=0.0)
        with self._lock:
            self._pending = np.concatenate([self._pending, samples])
            self.received += samples.size
            extra = self._pending.size - self.max_buffered if self.max_buffered else 0
            if extra > 0:  # the client runs ahead of the clock: keep the newest audio
                self._pending = self._pending[extra:]
                self.dropped += extra

    def buffered(self) -> int:
        """Samples queued and not yet taken."""
        return self._pending.size

    def _take(self) -> np.ndarray:
        """The next frame [hop] of input, or silence when less than a frame is queued."""
        with self._lock:
            if self._pending.size < self.hop:
                self.underruns += 1
                return np.zeros(self.hop, np.float32)
            frame, self._pending = self._pending[:self.hop], self._pending[self.hop:]
            return frame


class SessionsFull(VoxlmError):
    """Every batch row holds a session."""


# ---------------------------------------------------------------- the runtime

class DuplexRuntime:
    """The frame-synchronous loop over up to `max_sessions` sessions, one batch row each.

    The LM and codec stream for the runtime's whole life (`shutdown()` ends it; it is also a
    context manager), so one runtime per loaded model at a time. `open`, `close` and
    `Session.feed` are thread-safe; `step` runs on one thread at a time."""

    def __init__(self, model: DialogueModel, max_sessions: int = 1,
                 sampling: SamplingOptions = SamplingOptions(), int8: bool = False,
                 max_buffered_seconds: float = 0.0):
        if not 1 <= int(max_sessions) <= 256:
            raise VoxlmError(f"{max_sessions} sessions", "pass between 1 and 256 sessions")
        self.model, self.config = model, model.lm.config
        self.max_sessions = int(max_sessions)
        self.hop = model.codec.config.hop
        self.max_buffered = int(round(max_buffered_seconds * SAMPLE_RATE))
        c = self.config
        self.model_delays = np.array(c.delays[1:1 + c.n_q])  # [n_q]
        self.user_delays = np.array(c.delays[1 + c.n_q:1 + 2 * c.n_q])  # [n_q]
        self.depth = int(max(c.delays))  # a model frame is complete D columns after cb 1
        self.decoder_codebooks = min(model.codec.config.decoder_codebooks or c.n_q, c.n_q)  # K
        # S: a model frame can be decoded S columns after cb 1 (S = D, or less for a voice
        # decoder that reads only the first K codebooks: their largest delay)
        self.speak_delay = int(max(self.model_delays[:self.decoder_codebooks]))
        self.audio_at = model.audio_at
        self.gen = LMGen(model.lm, sampling, int8)
        self.latency = LatencyStats()
        self.steps = 0
        self._rows: list = [None] * self.max_sessions  # Session or None
        self._restarted = [0] * self.max_sessions  # step at which each row last restarted
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(self.gen.streaming(self.max_sessions))
        self._scope.enter_context(model.codec.streaming(self.max_sessions))

    # ------------------------------------------------------------ sessions

    def open(self) -> Session:
        """A new session in a free row; SessionsFull when every row is taken."""
        with self._lock:
            if None not in self._rows:
                raise SessionsFull(f"all {self.max_sessions} sessions are in use",
                                   "try again when one ends, or allow more sessions")
            row = self._rows.index(None)
            session = Session(self, f"s{next(self._ids)}", row)
            self._rows[row] = session
            return session

    def close(self, session: Session):
        """End a session and free its row (a no-op for one already closed)."""
        with self._lock:
            if self._rows[session.row] is session:
                self._rows[session.row] = None
            session.closed = True

    def sessions(self) -> list:
        with self._lock:
            return [s for s in self._rows if s is not None]

    def shutdown(self):
        """Leave the streaming scopes; the runtime cannot step afterwards."""
        self._scope.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # ------------------------------------------------------------ the step

    @torch.inference_mode()
    def step(self) -> dict:
        """One frame for every open session -> {session id: FrameResult}."""
        began = time.perf_counter()
        active = self.sessions()
        listening = [s for s in active if s.column >= self.audio_at]
        self._restart([s for s in listening if "encoder" in s.fresh], "encoder")
        codes = self._encode({s.row: s._take() for s in listening})  # [B, n_q] or None
        encoded = time.perf_counter()

        frame, force_text, force_audio = self._inputs(active, listening, codes)
        self._restart([s for s in active if "lm" in s.fresh], "lm", idle=True)
        tokens = self.gen.step(torch.from_numpy(frame), torch.from_numpy(force_text),
                               torch.from_numpy(force_audio)).numpy()  # [B, 1 + n_q]
        stepped = time.perf_counter()

        speaking = {}  # session id -> index of the model frame complete now
        for s in active:
            s.column += 1
            s.model.append(tokens[s.row])
            if s.column - self.audio_at - self.speak_delay >= 0:
                speaking[s.id] = s.column - self.audio_at - self.speak_delay
        self._restart([s for s in active if s.id in speaking and "decoder" in s.fresh], "decoder")
        audio = self._decode([s for s in active if s.id in speaking])  # [B, hop] or None
        decoded = time.perf_counter()

        results = {}
        heard = None if self.gen.heard is None else self.gen.heard.numpy()  # [B]
        for s in active:
            text, word = s.text.push(int(tokens[s.row, 0]), s.column)
            heard_word = s.heard.push(int(heard[s.row]), s.column)[1] if s.heard else None
            voice = audio[s.row].copy() if s.id in speaking else np.zeros(self.hop, np.float32)
            results[s.id] = FrameResult(voice, text, int(tokens[s.row, 0]), word,
                                        s.user_frames - 1 if s in listening else None,
                                        speaking.get(s.id), s.column, tokens[s.row].copy(),
                                        heard_word)
        self.steps += 1
        ms = 1000.0
        self.latency.add(encode=(encoded - began) * ms, lm=(stepped - encoded) * ms,
                         decode=(decoded - stepped) * ms, step=(time.perf_counter() - began) * ms)
        return results

    def _encode(self, frames: dict):
        """{row: [hop] float32} -> codes [B, n_q] int64 (other rows encode silence), or None."""
        if not frames:
            return None
        x = np.zeros((self.max_sessions, 1, self.hop), np.float32)
        for row, samples in frames.items():
            x[row, 0] = samples
        codes = self.model.codec.encode(torch.from_numpy(x), self.config.n_q)  # [B, n_q, 1]
        return codes[:, :, 0].numpy().astype(np.int64)

    def _inputs(self, active: list, listening: list, codes) -> tuple:
        """The LM's input frame [B, S] and forced ids: text [B], model audio [B, n_q]."""
        c, n_q, batch = self.config, self.config.n_q, self.max_sessions
        frame = np.full((batch, c.n_streams), c.audio_pad_id, np.int64)  # idle rows: start frame
        frame[:, 0] = c.text_start_id
        force_text = np.full(batch, TEXT_PAD_ID, np.int64)
        force_audio = np.full((batch, n_q), c.audio_pad_id, np.int64)
        for s in active:
            frame[s.row, :1 + n_q] = s.model[-1]  # the model's tokens of column s.column
            if s in listening:
                s.user.append(codes[s.row])
                s.user_frames += 1
                for k, delay in enumerate(self.user_delays):  # codebook k of frame t - delay
                    if s.user_frames > delay:
                        frame[s.row, 1 + n_q + k] = s.user[-1 - delay][k]
            force_text[s.row] = SAMPLE
            started = s.column + 1 >= self.audio_at + self.model_delays  # [n_q]
            force_audio[s.row] = np.where(started, SAMPLE, c.audio_pad_id)
        return frame, force_text, force_audio

    def _decode(self, speaking: list):
        """Decode the model frame each speaking session just completed -> [B, hop] or None."""
        if not speaking:
            return None
        codes = np.zeros((self.max_sessions, self.decoder_codebooks, 1), np.int64)  # others: 0
        for s in speaking:
            for k, delay in enumerate(self.model_delays[:self.decoder_codebooks]):  # delay_k in
                codes[s.row, k, 0] = s.model[-1 - (self.speak_delay - delay)][1 + k]
        return self.model.codec.decode(torch.from_numpy(codes))[:, 0].numpy()  # [B, hop]

    def _restart(self, sessions: list, part: str, idle: bool = False):
        """Restart the batch rows of `part` for sessions that use it for the first time; with
        `idle`, also the rows no session holds that have run RESTART_IDLE_EVERY steps."""
        rows = [s.row for s in sessions]
        for s in sessions:
            s.fresh.discard(part)
        if idle:
            with self._lock:
                free = [r for r, s in enumerate(self._rows) if s is None
                        and self.steps - self._restarted[r] >= RESTART_IDLE_EVERY]
            if free:
                self.model.codec.encoder.restart_rows(free)
                self.model.codec.decoder.restart_rows(free)
            rows += free
        if not rows:
            return
        if part == "lm":
            self.gen.lm.temporal.restart_rows(rows)  # not the depth stack: it restarts per frame
            for row in rows:
                self._restarted[row] = self.steps
        else:
            getattr(self.model.codec, part).restart_rows(rows)
