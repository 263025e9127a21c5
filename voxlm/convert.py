"""Voice conversion with the speech LM: the content of one recording in the voice of another.

Codebook 1 of the codec is distilled from a semantic teacher, so it carries what is said; the
acoustic codebooks 2..n_q carry who says it and how. `convert_voice` prompts the LM with the
target voice's codes (all codebooks), then walks the source recording frame by frame: codebook 1
is forced to the source's, codebooks 2..n_q are sampled by the depth transformer, conditioned on
the prompt through the temporal transformer's context. The codec decodes the result.

    target codes  [n_q, Tt]  given
    source codes  [1, Ts]    given (codebook 1)   -> codebooks 2..n_q [n_q - 1, Ts] sampled

`keep` > 1 forces the source's codebooks 1..keep instead (more of its words, and of its voice).

The LM must have learned several voices in the continuation, aligned or interleave layout (a
dialogue model speaks in one voice only and has no use here).
"""
from __future__ import annotations

import numpy as np

from .errors import VoxlmError
from .lm.generate import LMGen, SamplingOptions
from .lm.speech import (SAMPLE, Generation, SpeechLayout, _encode, _run_plan, _seed, check_codec,
                        speech_plan)

MAX_PROMPT_SECONDS = 20.0  # the target prompt is cut to its first seconds (context budget)


def convert_voice(lm, codec, source: np.ndarray, target: np.ndarray,
                  sampling: SamplingOptions = SamplingOptions(),
                  layout: SpeechLayout = SpeechLayout(),
                  prompt_seconds: float = 6.0, seed: int | None = None,
                  keep: int = 1) -> Generation:
    """source, target: mono float32 16 kHz -> Generation(audio [Ts * hop], frames [S, L], "").
    The audio is the source's content (its codebooks 1..keep) in the target's voice (codebooks
    keep+1..n_q sampled); it has the source's length in codec frames. A larger `keep` keeps more
    of the source: its words more surely, and more of its voice."""
    c = lm.config
    if not 1 <= keep < c.n_q:
        raise VoxlmError(f"--keep-codebooks {keep}",
                         f"keep 1 to {c.n_q - 1} of the source's codebooks (this LM models {c.n_q})")
    if layout.mode == "duplex":
        raise VoxlmError("this LM was trained for full duplex dialogue; it speaks one voice",
                         "convert with an LM trained with --mode continuation or aligned")
    if not 0 < prompt_seconds <= MAX_PROMPT_SECONDS:
        raise VoxlmError(f"--prompt-seconds {prompt_seconds}",
                         f"pass a length above 0 and at most {MAX_PROMPT_SECONDS:g} seconds")
    check_codec(lm, codec, layout)
    prompt = _encode(codec, target, c)[:, :max(1, int(round(prompt_seconds * layout.frame_rate)))]
    content = _encode(codec, source, c)  # [n_q, Ts]
    tt, ts = prompt.shape[1], content.shape[1]
    if 1 + tt + ts + max(c.delays) > c.context:
        seconds = (c.context - 1 - tt - max(c.delays)) / layout.frame_rate
        raise VoxlmError(f"the source is {ts / layout.frame_rate:.1f} s, and the model's context "
                         f"leaves {seconds:.1f} s after the voice prompt",
                         "cut the source into shorter pieces, or pass a shorter --prompt-seconds")
    codes = np.concatenate([prompt, content], axis=1)  # [n_q, Tt + Ts]
    plan = speech_plan(codes, 1 + tt + ts + max(c.delays), layout, c)  # aligned: text sampled
    for k in range(keep, c.n_q):  # the source's codebooks past `keep`: the target voice's
        delay = c.delays[1 + k]
        plan[1 + k, 1 + tt + delay:1 + tt + ts + delay] = SAMPLE
    _seed(seed)
    frames, audio = _run_plan(LMGen(lm, sampling), codec, plan, audio_at=1)
    hop = codec.config.hop  # samples per codec frame
    return Generation(audio[tt * hop:(tt + ts) * hop], frames, "")

