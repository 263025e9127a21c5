"""Speech from the LM, frame by frame: continuation, text to speech (TTS), speech to text (ASR).

    model = load_speech_lm("runs/lm")            # None: the shipped voxlm/assets/lm.safetensors
    codec = model.codec()                        # the codec its tokens were made with
    out = synthesize(model.lm, codec, model.tokenizer(), "Hello there.", layout=model.layout)
    out.audio, out.frames                        # [N] float32 16 kHz; [S, L] as generated
    text = transcribe(model.lm, codec, model.tokenizer(), audio, layout=model.layout)
    out = continue_speech(model.lm, codec, audio, 5.0, layout=model.layout)

Each task lays its frames out as `data.LMData` trains them (`streams.py`: column 0 the start
frame, audio rows delayed by config.delays) and runs the KV-cached `LMGen.step` once per frame,
forcing what is given and sampling the rest. Audio is decoded inside `codec.streaming(1)` one
codec frame at a time, as soon as its codebooks are complete (codebooks 2..n_q come
`acoustic_delay` frames after codebook 1). `SpeechLayout`, read from the model file, says which
layout and delays the LM was trained with (defaults for files that predate it).

- continuation: the prompt's codes, then sampled frames. The layout follows the training mode:
  continuation (text row "not started"), interleave (one speech span: text TEXT_PAD_ID), aligned
  (the ASR direction: the model writes its own time-aligned text, asr_delay frames behind the
  audio, while it hears the prompt and while it speaks). Known columns are prefilled in one call.
- TTS (aligned, the audio lags the text by tts_delay frames): per word TEXT_EOW_ID and then its
  tokens, pads between words, as in training. The model chooses when each word starts: between
  words its text token is sampled among {TEXT_PAD_ID, TEXT_EOW_ID} (`LMGen` text_choices), an EOW
  brings in the next word's tokens (forced, one per frame), and after `max_pause` seconds of pads
  the next word is forced in. The audio rows stay "not started" for the delay, then are sampled.
  Generation stops once the text is exhausted and the audio has reached its end and gone silent,
  or `tail` seconds after that.
- ASR (aligned, the text lags the audio by asr_delay frames): the input's codes are forced into
  the model audio rows; the text is sampled greedily; its runs of tokenizer ids are the words.

Voices: the LM has no voice conditioning. It speaks in whichever voice it samples (the seed
picks one); `voice` accepts only None or "default".
"""
from __future__ import annotations

import json
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import VoxlmError
from .data import MOSHI_DELAY
from .generate import GREEDY, LMGen, SamplingOptions
from .model import LM, TEXT_EOW_ID, TEXT_PAD_ID
from .streams import (FRAME_RATE, SPEECH, TEXT_OFFSET, Segment, aligned, continuation,
                      from_aligned, interleave, text_card, tokenize_words)

SAMPLE = -1  # in a plan: this token is sampled, not given
MAX_CONTINUE_SECONDS = 600.0  # longest continuation asked for at once
VOICES = ("default",)  # the LM has no voice conditioning: one voice, whatever it samples
ASR_TAIL = 12  # frames (~1 s) run past the layout's end so a last long word can finish
TRAIN_FIX = ("train one with `voxlm lm train --data DIR --out runs/lm --mode aligned` and pass "
             "--checkpoint runs/lm")


@dataclass(frozen=True)
class SpeechLayout:
    """How the LM was trained, as far as generation needs it (its model file's extra)."""
    mode: str = ""  # the data.MODES entry it was trained on; "": not recorded (older files)
    tts_delay: int = MOSHI_DELAY  # TTS direction: frames the audio lags the text
    asr_delay: int = MOSHI_DELAY  # ASR direction: frames the text lags the audio
    frame_rate: float = FRAME_RATE  # Hz of the codec its tokens came from


@dataclass(frozen=True)
class TTSOptions:
    max_pause: float = 1.5  # seconds of pads between words before the next word is forced in
    tail: float = 2.0  # seconds generated at most after the audio reaches the end of the text
    silence: float = 0.32  # seconds of silent audio after the end of the text that end speech
    silence_db: float = -45.0  # dBFS (frame RMS) below which a decoded frame counts as silent


class Generation(NamedTuple):
    audio: np.ndarray | None  # [N] float32 16 kHz, decoded frame by frame (None for ASR)
    frames: np.ndarray  # [S, L] int64: every stream as generated, laid out as in streams.py
    text: str  # the text row's words, decoded ("" without a tokenizer)


# ---------------------------------------------------------------- model files

def default_lm_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "lm.safetensors"


@dataclass
class SpeechModel:
    lm: LM
    layout: SpeechLayout
    path: Path  # the model file
    extra: dict  # the model file's extra metadata (train.LMTask.export)

    def tokenizer(self):
        """The text tokenizer it was trained with: `tokenizer.model` or `<name>.tokenizer.model`
        beside the model file, else Gemma 3's when that is what it used."""
        from .tokenize_corpus import sha256_bytes
        from .tokenizer import load_gemma_tokenizer, load_tokenizer

        info = self.extra.get("tokenizer") or {}
        found = [p for p in (self.path.with_suffix(".tokenizer.model"),
                             self.path.parent / "tokenizer.model") if p.is_file()]
        if found:
            tokenizer = load_tokenizer(found[0])
            if info.get("sha256") and sha256_bytes(tokenizer.model_proto) != info["sha256"]:
                raise VoxlmError(f"{found[0]} is not the tokenizer {self.path} was trained with",
                                 "put the training run's tokenizer.model beside the model file")
        elif info.get("name") == "gemma3":
            tokenizer = load_gemma_tokenizer()
        else:
            raise VoxlmError(f"no tokenizer.model beside {self.path}",
                             "copy the training run's tokenizer.model next to the model file")
        if text_card(tokenizer.vocab_size) > self.lm.config.text_card:
            raise VoxlmError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} ids, more "
                             f"than the LM's text stream holds ({self.lm.config.text_card})",
                             "use the tokenizer the LM was trained with")
        return tokenizer

    def reads_codes_of(self, codec) -> bool:
        """Whether the codec file `codec` makes the codes the LM's tokens were made with."""
        from .tokenize_corpus import codec_code_ids, recorded_code_ids

        return bool(codec_code_ids(codec) & recorded_code_ids(
            self.extra.get("codec_sha256"), self.extra.get("codec_codes_of", [])))

    def codec(self, path=None):
        """The codec `path` (a model file or run folder), else the one the LM's tokens were made
        with when that file is still there, else the shipped codec; checked against the LM."""
        import warnings

        from ..codec.model import load_codec
        from .tokenize_corpus import codec_file

        expected, recorded = self.extra.get("codec_sha256"), self.extra.get("codec_path")
        same = self.reads_codes_of
        if path is None and recorded and Path(recorded).is_file() and same(recorded):
            path = recorded  # the training codec, still there and unchanged
        codec = load_codec(path)  # (None: the shipped one, or an error saying none ships)
        if expected and path != recorded and not same(path):
            warnings.warn(f"{codec_file(path)} is not the codec {self.path.name}'s tokens were "
                          "made with; its codes may mean other sounds", stacklevel=2)
        check_codec(self.lm, codec, self.layout)
        return codec


def load_speech_lm(checkpoint=None, device: str = "cpu") -> SpeechModel:
    """An LM model file or run folder (None: the shipped default) with its SpeechLayout."""
    from safetensors import safe_open

    from .model import load_lm

    if checkpoint is None and not default_lm_path().exists():
        raise VoxlmError("this copy of voxlm has no shipped speech LM yet", TRAIN_FIX)
    path = Path(checkpoint) if checkpoint is not None else default_lm_path()
    if path.is_dir():
        path = path / "model.safetensors"
    lm = load_lm(path, device)  # validates the file
    with safe_open(str(path), framework="pt") as handle:
        extra = json.loads((handle.metadata() or {}).get("extra", "{}"))
    layout = SpeechLayout(mode=str(extra.get("mode", "")),
                          tts_delay=int(extra.get("tts_delay", MOSHI_DELAY)),
                          asr_delay=int(extra.get("asr_delay", MOSHI_DELAY)),
                          frame_rate=float(extra.get("frame_rate", FRAME_RATE)))
    return SpeechModel(lm, layout, path, extra)


def check_codec(lm: LM, codec, layout: SpeechLayout = SpeechLayout()):
    """VoxlmError unless the codec speaks the LM's audio vocabulary at its frame rate."""
    c, cc = lm.config, codec.config
    problems = []
    if cc.n_q < c.n_q:
        problems.append(f"{cc.n_q} codebooks < the LM's {c.n_q}")
    if cc.codebook_size != c.card:
        problems.append(f"{cc.codebook_size} codes per codebook, the LM {c.card}")
    if abs(cc.frame_rate - layout.frame_rate) > 1e-6:
        problems.append(f"{cc.frame_rate} Hz frames, the LM's tokens {layout.frame_rate} Hz")
    if problems:
        raise VoxlmError(f"the codec does not fit the LM ({'; '.join(problems)})",
                         "pass the codec the LM's tokens were made with (--codec)")


# ---------------------------------------------------------------- the three tasks

def continue_speech(lm: LM, codec, audio: np.ndarray, seconds: float,
                    sampling: SamplingOptions = SamplingOptions(),
                    layout: SpeechLayout = SpeechLayout(), tokenizer=None,
                    seed: int | None = None) -> Generation:
    """audio [N] float32 16 kHz -> Generation whose audio is the prompt (through the codec) and
    then `seconds` more, [(ceil(N / hop) + round(seconds * frame_rate)) * hop]."""
    c = lm.config
    if layout.mode == "duplex":
        raise VoxlmError("this LM was trained for full duplex dialogue, not continuation",
                         "use voxlm chat, or an LM trained with --mode continuation or aligned")
    if not 0 <= seconds <= MAX_CONTINUE_SECONDS:
        raise VoxlmError(f"--seconds {seconds}", f"pass a length from 0 to {MAX_CONTINUE_SECONDS:g} "
                         "seconds")
    check_codec(lm, codec, layout)
    codes = _encode(codec, audio, c)  # [n_q, T]
    length, new = codes.shape[1], int(round(seconds * layout.frame_rate))
    columns = 1 + length + new + max(c.delays)  # start frame, audio frames, acoustic delay
    plan = speech_plan(codes, columns, layout, c)
    for k, delay in enumerate(c.delays[1:1 + c.n_q]):  # codebook k of frames T.. is sampled
        plan[1 + k, 1 + length + delay:] = SAMPLE
    _seed(seed)
    frames, out = _run_plan(LMGen(lm, sampling), codec, plan, audio_at=1)
    text = _words_text(frames, c, layout.asr_delay, tokenizer) if layout.mode == "aligned" else ""
    return Generation(out, frames, text)


def speech_plan(codes: np.ndarray, columns: int, layout: SpeechLayout, config) -> np.ndarray:
    """The plan [S, columns] of speech codes [n_q, T] with no words given, in the LM's layout:
    continuation's frames; one interleave speech span (text pads); or aligned's ASR direction
    (the model writes its text as it goes: SAMPLE from asr_delay on). Columns past the codes
    hold "not started" audio for the caller to mark SAMPLE."""
    c = config
    if layout.mode == "interleave":
        plan = _extend(interleave([Segment(SPEECH, codes=codes)], c), columns, TEXT_PAD_ID, c)
    elif layout.mode == "aligned":
        plan = _extend(aligned(codes, [], [], c, layout.asr_delay, layout.frame_rate), columns,
                       SAMPLE, c)
        plan[0, max(1, layout.asr_delay):] = SAMPLE
    else:
        plan = _extend(continuation(codes, c), columns, c.text_start_id, c)
    return plan[:, :columns]


def synthesize(lm: LM, codec, tokenizer, text: str, sampling: SamplingOptions = SamplingOptions(),
               voice: str | None = None, layout: SpeechLayout = SpeechLayout(),
               options: TTSOptions = TTSOptions(), seed: int | None = None) -> Generation:
    """Speak `text`: -> Generation (audio [N] float32 16 kHz, frames [S, L], the text)."""
    c = lm.config
    check_voice(voice)
    _check_mode(layout, "text to speech")
    check_codec(lm, codec, layout)
    words = text.split()
    if not any(ch.isalnum() for ch in text):
        raise VoxlmError("no words to speak" + (f" in {text[:40]!r}" if words else ""),
                         "pass some text with letters or numbers, e.g. voxlm tts \"Hello there.\"")
    try:
        tokens = [[t + TEXT_OFFSET for t in ids]  # text ids per word
                  for ids in tokenize_words([{"w": w} for w in words], tokenizer)]
    except ValueError as error:
        raise VoxlmError(f"cannot tokenize the text ({error})", "pass plain words") from None
    top = max(max(ids) for ids in tokens)
    if top >= c.text_card:
        raise VoxlmError(f"token id {top - TEXT_OFFSET} is outside the LM's text vocabulary",
                         "use the tokenizer the LM was trained with")
    delay, rate, d = layout.tts_delay, layout.frame_rate, max(c.delays)
    audio_at = 1 + delay  # first column of audio
    max_pause, tail = round(options.max_pause * rate), max(1, round(options.tail * rate))
    silent = max(1, round(options.silence * rate))
    columns = 2 + sum(max_pause + 1 + len(ids) for ids in tokens) + delay + d + tail
    frames = np.full((c.n_streams, columns), c.audio_pad_id, np.int64)  # [S, L] "not started"
    frames[0] = c.text_start_id
    starts = np.array([audio_at + k for k in c.delays[1:1 + c.n_q]])  # [n_q] first sampled column
    choices = torch.tensor([TEXT_PAD_ID, TEXT_EOW_ID])
    pending, word, pause, text_end = deque(), 0, 0, None
    gen = LMGen(lm, sampling)
    speaker = _Speaker(codec, c, audio_at)
    _seed(seed)
    with gen.streaming(1), codec.streaming(1):
        for column in range(columns - 1):
            nxt = column + 1
            if pending:
                force, allowed = pending.popleft(), None
            elif word < len(tokens):
                force, allowed = (TEXT_EOW_ID, None) if pause >= max_pause else (None, choices)
            else:
                force, allowed = TEXT_PAD_ID, None
            force_audio = np.where(nxt < starts, c.audio_pad_id, SAMPLE)  # [n_q]
            token = _step(gen, frames, column, force, force_audio, allowed)
            if word < len(tokens) and not pending and token == TEXT_EOW_ID:
                pending.extend(tokens[word])
                word, pause = word + 1, 0
            elif allowed is not None:
                pause += 1
            if text_end is None and word == len(tokens) and not pending:
                text_end = nxt  # the column of the last token
            speaker.push(frames, nxt)
            done = len(speaker.levels) - (text_end - 1) if text_end is not None else 0
            if done >= silent and max(speaker.levels[-silent:]) < options.silence_db:
                break  # the audio reached the text's end (frame text_end - 1), then silence
            if done >= tail:
                break
    frames = frames[:, :nxt + 1]
    return Generation(speaker.audio(), frames, " ".join(words))


def transcribe(lm: LM, codec, tokenizer, audio: np.ndarray,
               layout: SpeechLayout = SpeechLayout()) -> str:
    """audio [N] float32 16 kHz -> its text (greedy)."""
    return transcribe_frames(lm, codec, tokenizer, audio, layout).text


def transcribe_frames(lm: LM, codec, tokenizer, audio: np.ndarray,
                      layout: SpeechLayout = SpeechLayout()) -> Generation:
    """ASR, keeping the frames: Generation(None, frames [S, L], text)."""
    c = lm.config
    _check_mode(layout, "speech recognition")
    check_codec(lm, codec, layout)
    codes = _encode(codec, audio, c)  # [n_q, T]
    plan = aligned(codes, [], [], c, layout.asr_delay, layout.frame_rate)  # audio in, text pads
    end = plan.shape[1]
    plan = _extend(plan, end + ASR_TAIL, SAMPLE, c)
    plan[0, max(1, layout.asr_delay):] = SAMPLE  # a word's EOW comes asr_delay columns in at the
    # earliest; before that training has only pads

    def finished(frames, column):  # past the layout, once a word has ended
        return column >= end and frames[0, column] < TEXT_OFFSET

    frames, _ = _run_plan(LMGen(lm, GREEDY), None, plan, audio_at=1, stop=finished)
    return Generation(None, frames, _words_text(frames, c, layout.asr_delay, tokenizer))


def check_voice(voice: str | None):
    if voice is not None and voice not in VOICES:
        raise VoxlmError(f"voice {voice!r}: this LM has no voice conditioning, it speaks in one "
                         "voice", f"leave --voice out or pass {' or '.join(VOICES)}")


# ---------------------------------------------------------------- frame loops

class _Speaker:
    """Decodes the model audio rows of frames [S, L] frame by frame, as each audio frame's
    codebooks complete; call inside `codec.streaming(1)`."""

    def __init__(self, codec, config, audio_at: int):
        from ..audio import rms_db

        self.codec, self.audio_at, self.rms_db = codec, audio_at, rms_db
        self.delays = np.asarray(config.delays[1:1 + config.n_q])  # [n_q]
        self.rows = np.arange(1, 1 + config.n_q)  # [n_q]
        self.chunks, self.levels = [], []  # [hop] float32 per audio frame; its level, dBFS

    def push(self, frames: np.ndarray, column: int):
        """Column `column` of frames [S, L] is final: decode the audio frame it completes."""
        j = column - self.audio_at - int(self.delays.max())  # audio frame complete now
        if j < 0:
            return
        codes = frames[self.rows, self.audio_at + j + self.delays]  # [n_q]
        chunk = self.codec.decode(torch.from_numpy(codes)[None, :, None])[0, 0].numpy()  # [hop]
        self.chunks.append(chunk)
        self.levels.append(self.rms_db(chunk))

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def _step(gen: LMGen, frames: np.ndarray, column: int, force_text, force_audio,
          text_choices=None) -> int:
    """Fill the model rows of column + 1 of frames [S, L] from column `column`; -> the text id.
    force_text: int or None; force_audio: [n_q] ids, SAMPLE (< 0) where sampled."""
    frame = torch.from_numpy(frames[:, column])[None]  # [1, S]
    audio = None if force_audio is None else torch.from_numpy(np.asarray(force_audio))[None]
    out = gen.step(frame, force_text, audio, text_choices)[0].numpy()  # [1 + n_q]
    frames[:out.shape[0], column + 1] = out
    return int(out[0])


def _run_plan(gen: LMGen, codec, plan: np.ndarray, audio_at: int, stop=None) -> tuple:
    """Generate the SAMPLE entries of plan [S, L] (the rest is given), one frame at a time.
    The leading columns given whole are prefilled in one call. -> (frames [S, L'], audio [N] or
    None); L' < L when stop(frames, column) said so."""
    config = gen.lm.config
    frames = plan.copy()
    model_rows = 1 + config.n_q
    sampled = (plan[:model_rows] == SAMPLE).any(axis=0)  # [L]
    known = int(np.argmax(sampled)) if sampled.any() else plan.shape[1]  # first column to sample
    first = max(known - 1, 0)  # the first column stepped from
    speaker = _Speaker(codec, config, audio_at) if codec is not None else None
    last = plan.shape[1] - 1
    with gen.streaming(1), (codec.streaming(1) if codec is not None else nullcontext()):
        if first:
            gen.prefill(torch.from_numpy(frames[:, :first])[None])  # [1, S, first]
        for column in range(first + 1 if speaker else 0):  # the given columns' audio
            speaker.push(frames, column)
        for column in range(first, plan.shape[1] - 1):
            nxt = column + 1
            text = int(plan[0, nxt])
            _step(gen, frames, column, None if text == SAMPLE else text, plan[1:model_rows, nxt])
            if speaker:
                speaker.push(frames, nxt)
            if stop is not None and stop(frames, nxt):
                last = nxt
                break
    return frames[:, :last + 1], (speaker.audio() if speaker else None)


# ---------------------------------------------------------------- helpers

def _encode(codec, audio: np.ndarray, config) -> np.ndarray:
    """audio [N] float32 -> codes [n_q, ceil(N / hop)] int64."""
    from ..codec.files import encode_audio

    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise VoxlmError(f"audio of shape {audio.shape}",
                         "pass mono audio with at least one sample")
    return encode_audio(codec, audio)[:config.n_q].astype(np.int64)


def _extend(plan: np.ndarray, length: int, text: int, config) -> np.ndarray:
    """plan [S, L] -> [S, max(L, length)]: new columns hold `text` and "not started" audio."""
    if plan.shape[1] >= length:
        return plan
    tail = np.full((plan.shape[0], length - plan.shape[1]), config.audio_pad_id, np.int64)
    tail[0] = text
    return np.concatenate([plan, tail], axis=1)


def _words_text(frames: np.ndarray, config, asr_delay: int, tokenizer) -> str:
    """The words of the text row (runs of tokenizer ids), decoded."""
    if tokenizer is None:
        return ""
    ids = [t for word in from_aligned(frames, config, asr_delay).words for t in word
           if t < tokenizer.vocab_size]
    return tokenizer.decode(ids).strip()


def _check_mode(layout: SpeechLayout, task: str):
    if layout.mode not in ("", "aligned"):
        raise VoxlmError(f"this LM was trained in {layout.mode} mode, which has no {task}",
                         "use an LM trained with --mode aligned (text and speech time-aligned)")


def _seed(seed: int | None):
    if seed is not None:
        torch.manual_seed(seed)
