"""`voxlm chat`: the dialogue runtime offline over a file: the user's audio, then silence until
the model has finished its answer (or a limit), as a stereo wav and a transcript.

    model = load_dialogue_model("runs/dialogue")
    result = chat(model, audio, ChatOptions(max_seconds=20), seed=0)
    result.audio        # [N, 2] float32 16 kHz: channel 0 the user (the input), channel 1 the model
    result.words        # [Word]: the model's inner text, with start and end seconds
    result.heard        # [Word]: the user's words as a listen head wrote them down (if it has one)

The loop is `dialogue.DuplexRuntime` with one session, the code path of the server: the input
is fed whole and taken one 80 ms frame per step; after it, each step gets silence. The model's
frame j is written at sample j * hop, beside the user's frame j (the layout's alignment).
Stopping, once the input has been heard: no speech from the model within `answer_wait` seconds,
or `end_silence` seconds of silence after it has spoken (speech: a frame above `silence_db`, or
inner text), or `max_seconds` of dialogue in all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .audio import SAMPLE_RATE, check_audio, rms_db
from .errors import VoxlmError
from .lm.generate import SamplingOptions

EXTRA_SECONDS = 30.0  # default limit: the input plus this much


@dataclass(frozen=True)
class ChatOptions:
    max_seconds: float = 0.0  # longest dialogue (input included, cut there); 0: input + 30 s
    answer_wait: float = 4.0  # s after the input: stop when the model has not spoken by then
    end_silence: float = 1.0  # s of the model's silence after it spoke that end its answer
    silence_db: float = -45.0  # dBFS (frame RMS) below which a model frame is silent
    sampling: SamplingOptions = SamplingOptions()
    int8: bool = False  # the LM's matrix products with int8 weights, as `voxlm serve` runs it


class ChatResult(NamedTuple):
    audio: np.ndarray  # [N, 2] float32: channel 0 user, channel 1 model, N = frames * hop
    words: list  # [dialogue.Word] the model's inner text words, seconds from the start
    text: str  # the model's inner text as it was produced
    frames: int  # frames of dialogue written
    input_frames: int  # frames the input filled
    latency: dict  # dialogue.LatencyStats.summary() of the run
    heard: tuple = ()  # [dialogue.Word] the user's words as its listen head wrote them down


def chat(model, audio: np.ndarray, options: ChatOptions = ChatOptions(),
         seed: int | None = None) -> ChatResult:
    """One offline conversation: audio [N] float32 16 kHz (the user) -> ChatResult."""
    from .dialogue import DuplexRuntime

    audio = check_audio(audio)
    if audio.ndim != 1:
        raise VoxlmError(f"audio of shape {audio.shape}", "pass mono audio [N]")
    if not (options.max_seconds >= 0 and math.isfinite(options.max_seconds)):
        raise VoxlmError(f"--max-seconds {options.max_seconds}",
                         "pass a length in seconds above 0 (or 0 for the input plus 30 s)")
    rate, hop = model.frame_rate, model.codec.config.hop
    input_frames = -(-audio.size // hop)
    limit = (round(options.max_seconds * rate) if options.max_seconds
             else input_frames + round(EXTRA_SECONDS * rate))
    if limit < 1:
        raise VoxlmError(f"--max-seconds {options.max_seconds} is shorter than one frame "
                         f"({hop / SAMPLE_RATE:.2f} s)", "pass a longer limit")
    wait, end = round(options.answer_wait * rate), max(1, round(options.end_silence * rate))
    user = np.zeros(max(limit, input_frames) * hop, np.float32)
    user[:audio.size] = audio
    if seed is not None:
        torch.manual_seed(seed)
    voice, texts, words, heard = [], [], [], []
    spoke, quiet = False, 0
    with DuplexRuntime(model, 1, options.sampling, int8=options.int8) as runtime:
        session = runtime.open()
        session.feed(user[:min(limit, input_frames) * hop])
        while len(voice) < limit:
            out = runtime.step()[session.id]
            texts.append(out.text)
            words += [out.word] if out.word else []
            heard += [out.heard_word] if out.heard_word else []
            if out.model_frame is None:
                continue
            voice.append(out.audio)
            after = len(voice) - input_frames  # frames of the model's answer time so far
            if after > 0:
                loud = bool(out.text) or rms_db(out.audio) > options.silence_db
                spoke, quiet = spoke or loud, 0 if loud else quiet + 1
            if after >= 0 and ((not spoke and after >= wait) or (spoke and quiet >= end)):
                break
        text, word = session.text.finish()
        texts.append(text)
        words += [word] if word else []
        if session.heard is not None:
            heard += [w for w in session.heard.finish()[1:] if w]
        latency = runtime.latency.summary()
    frames = len(voice)
    stereo = np.stack([user[:frames * hop], np.concatenate(voice)], axis=1)  # [N, 2]
    return ChatResult(stereo, words, "".join(texts), frames, input_frames, latency, tuple(heard))


def chat_file(source, output, transcript=None, checkpoint=None, codec=None,
              options: ChatOptions = ChatOptions(), seed: int | None = None,
              max_input_seconds: float = 600.0) -> ChatResult:
    """`voxlm chat`: read the user's audio (any rate and channels: mixed and resampled to
    16 kHz mono), run `chat`, write the stereo wav and the transcript JSON atomically."""
    from .audio import WRITABLE, load_audio, save_audio
    from .data import write_json
    from .dialogue import load_dialogue_model, word_dicts

    output = Path(output)
    if output.suffix.lower() not in WRITABLE:
        raise VoxlmError(f"{output}: cannot write '{output.suffix}' files", "use a .wav or .flac name")
    if transcript is not None and Path(transcript).suffix.lower() != ".json":
        raise VoxlmError(f"{transcript}: the transcript is JSON", "use a .json name")
    audio = load_audio(source, max_seconds=max_input_seconds)
    model = load_dialogue_model(checkpoint, codec)
    result = chat(model, audio, options, seed)
    save_audio(output, result.audio)
    if transcript is not None:
        step = result.latency["step"]["mean_ms"]
        write_json(transcript, {
            "input": str(source), "output": str(output), "sample_rate": SAMPLE_RATE,
            "channels": ["user", "model"], "seconds": round(len(result.audio) / SAMPLE_RATE, 3),
            "input_seconds": round(len(audio) / SAMPLE_RATE, 3), "text": result.text,
            "words": word_dicts(result.words),
            **({"heard": word_dicts(result.heard)} if model.lm.config.listen else {}),
            "model": model.info(), "int8": options.int8, "latency_ms": result.latency,
            "real_time_factor": round(step / (1000 * model.codec.config.hop / SAMPLE_RATE), 4)})
    return result
