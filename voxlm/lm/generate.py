"""Frame-by-frame generation: one temporal step, then the depth loop text -> cb1 -> ... -> cb_n_q.

    gen = LMGen(lm, SamplingOptions(temperature=0.8))
    with gen.streaming(batch_size=1):
        for t in range(frames):
            nxt = gen.step(frame)              # frame [B, S] at t -> model tokens [B, 1+n_q] at t+1
            frame = torch.cat([nxt, user[:, :, t + 1]], 1)   # user rows only with user_audio

`force_text` (TTS: the text is given) and `force_audio` (ASR: the audio is given) replace the
sampled token; ids < 0 in them mean "sample this one". `text_choices` (ids [C]) limits a sampled
text token to those ids (TTS lets the model choose between a pad and the next word's start).

At batch 1 on a CPU a step costs the bytes of weights it reads (the temporal stack once, the
depth stack once per position, the text head) plus a few microseconds per operation (about
1400 of them). So the depth loop projects h_t once per frame, then per position does only an
embedding lookup, the small transformer over its KV cache, one head and the sampler; and
`int8=True` quarters the weight bytes (base preset: about 0.6x the fp32 step time here).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..modules.transformer import Attention
from .model import LM, TEXT_PAD_ID


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.8  # audio softmax temperature; 0 = greedy (argmax)
    top_k: int = 250  # audio: sample among the k most likely codes; 0 = all
    top_p: float = 0.0  # audio: nucleus, the smallest set with this much probability; 0 = off
    text_temperature: float = 0.7  # the same three for the text token
    text_top_k: int = 25
    text_top_p: float = 0.0
    # a sampled text token's first choice, "pad" (TEXT_PAD_ID: no text at this frame, so
    # silent or waiting) or "not pad", is drawn at this temperature, then the id at
    # text_temperature. A cool text temperature alone sharpens that choice towards the likelier
    # pad as well, so a reply that is due waits frames longer; at 1 the model's own odds decide
    # when it speaks while its words stay cool. 0: one draw at text_temperature. Greedy text
    # (text_temperature 0) stays greedy
    pad_temperature: float = 1.0

    def __post_init__(self):
        from ..errors import VoxlmError

        for prefix in ("", "text_"):
            t, k, p = (getattr(self, prefix + n) for n in ("temperature", "top_k", "top_p"))
            flag = "--" + prefix.replace("_", "-")
            if not 0.0 <= t <= 100.0:
                raise VoxlmError(f"{flag}temperature {t}", "pass 0 (greedy) or more, e.g. 0.8")
            if k < 0 or k != int(k):
                raise VoxlmError(f"{flag}top-k {k}", "pass a whole number: 0 (all) or more")
            if not 0.0 <= p <= 1.0:
                raise VoxlmError(f"{flag}top-p {p}", "pass a probability in 0..1 (0: off)")
        if not 0.0 <= self.pad_temperature <= 100.0:
            raise VoxlmError(f"--pad-temperature {self.pad_temperature}",
                             "pass 0 (off: the text temperature decides) or more, e.g. 1")


GREEDY = SamplingOptions(temperature=0.0, text_temperature=0.0)


class StepOutput(NamedTuple):
    tokens: torch.Tensor  # [B, 1 + n_q] model text and codebooks of the next frame
    text_logits: torch.Tensor | None  # [B, text_card]
    audio_logits: torch.Tensor | None  # [B, n_q, card]


def sample_token(logits: torch.Tensor, temperature: float, top_k: int = 0,
                 top_p: float = 0.0) -> torch.Tensor:
    """logits [B, V] -> ids [B] (int64)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    ids = None
    if 0 < top_k < logits.shape[-1]:
        logits, ids = logits.topk(top_k, dim=-1)  # sorted, descending
    elif top_p > 0:
        logits, ids = logits.sort(dim=-1, descending=True)
    probs = logits.softmax(-1)
    if top_p > 0:  # drop a token when the ones before it already hold top_p
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)
    # one draw from probs (unnormalised is fine): argmax of probs / Exp(1) noise, what
    # torch.multinomial does for one sample, without its checks and host sync
    choice = (probs / torch.empty_like(probs).exponential_()).argmax(-1, keepdim=True)  # [B, 1]
    return choice[:, 0] if ids is None else ids.gather(-1, choice)[:, 0]


def sample_text_token(logits: torch.Tensor, temperature: float, top_k: int = 0,
                      top_p: float = 0.0, pad_temperature: float = 0.0) -> torch.Tensor:
    """Text logits [B, V] -> ids [B]: with pad_temperature > 0, first pad or not at that
    temperature (odds p_pad / (1 - p_pad) raised to 1 / pad_temperature), then, when not, an id
    other than the pad by `sample_token`; else (or with greedy text, temperature 0)
    `sample_token` alone."""
    if pad_temperature <= 0 or temperature <= 0:
        return sample_token(logits, temperature, top_k, top_p)
    logp = logits.float().log_softmax(-1)  # [B, V]
    pad = logp[:, TEXT_PAD_ID]  # [B]
    rest = torch.log(-torch.expm1(pad)).clamp(min=-1e4)  # log(1 - p_pad), [B]
    waits = torch.rand_like(pad) < torch.sigmoid((pad - rest) / pad_temperature)  # [B]
    other = logits.clone()
    other[:, TEXT_PAD_ID] = float("-inf")
    return torch.where(waits, TEXT_PAD_ID, sample_token(other, temperature, top_k, top_p))


class LMGen:
    """Samples the model's next frame, one call per frame, inside `with gen.streaming(batch)`.

    `int8`: run every matrix product with int8 weights (fbgemm dynamic quantization, activations
    quantized per call): a step reads 4x fewer weight bytes, which is what bounds it on a CPU;
    logits move by about 1%. It works on a copy: stream with `gen.streaming`, not `lm.streaming`.
    """

    def __init__(self, lm: LM, options: SamplingOptions = SamplingOptions(), int8: bool = False):
        self.options, self.int8 = options, int8
        self.lm = quantize_int8(lm) if int8 else lm
        self._plan = None
        self.heard = None  # [B] the listen head's greedy id at the last step (LMConfig.listen)

    def streaming(self, batch_size: int = 1):
        self._plan = None  # weights may have moved since the last stream
        return self.lm.streaming(batch_size)

    def _prepare(self):
        """Per depth position: (input embedding table, head, sampling settings)."""
        lm, o, c = self.lm, self.options, self.lm.config
        embeddings = [None, lm.depth_text_emb.weight, *lm.depth_audio_emb.unbind(0)]
        if self.int8:
            heads = [lm.text_head, *lm.int8_audio_heads]  # quantized Linear modules
        else:
            heads = [partial(F.linear, weight=w)  # [V, depth_dim] each
                     for w in [lm.text_head.weight, *lm.audio_heads.unbind(0)]]
        settings = [(o.text_temperature, o.text_top_k, o.text_top_p)] + \
                   [(o.temperature, o.top_k, o.top_p)] * c.n_q
        self._pad_temperature = o.pad_temperature
        attention = [m for m in lm.depth.modules() if isinstance(m, Attention)]
        self._plan = (list(zip(embeddings, heads, settings)), attention)

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor):
        """Feed frames [B, S, T] of a prompt into the KV cache without sampling; then `step`
        with the frame that follows (T)."""
        self.lm.hidden(tokens)

    @torch.inference_mode()
    def step(self, frame: torch.Tensor, force_text=None, force_audio=None,
             text_choices=None) -> torch.Tensor:
        """frame [B, S] at t -> model tokens [B, 1 + n_q] at t+1. force_text: int or [B];
        force_audio: [B, n_q]; ids < 0 are sampled. text_choices: ids [C] a sampled text
        token is drawn from (None: any)."""
        return self._step(frame, force_text, force_audio, keep_logits=False,
                          text_choices=text_choices).tokens

    @torch.inference_mode()
    def step_with_logits(self, frame: torch.Tensor, force_text=None,
                         force_audio=None, text_choices=None) -> StepOutput:
        """Like `step`, and the logits each token was drawn from."""
        return self._step(frame, force_text, force_audio, keep_logits=True,
                          text_choices=text_choices)

    def _step(self, frame, force_text, force_audio, keep_logits: bool,
              text_choices=None) -> StepOutput:
        lm = self.lm
        if not lm.is_streaming:
            raise RuntimeError("LMGen.step runs inside `with gen.streaming(batch_size):`")
        if self._plan is None:
            self._prepare()
        positions, attention = self._plan
        batch = frame.shape[0]
        h = lm.hidden(frame[:, :, None])  # [B, 1, dim], one temporal step
        if lm.config.listen:  # what it heard: the user's text id of the next column
            self.heard = lm.listen_head(h[:, 0]).argmax(-1)
        base = lm.depth_in(h)  # [B, 1, depth_dim]
        forced = [force_text] + ([None] * lm.config.n_q if force_audio is None
                                 else list(torch.as_tensor(force_audio).unbind(-1)))
        forced = [None if f is None else torch.as_tensor(f, device=h.device).expand(batch)
                  for f in forced]  # [B] each
        given = [f is not None and bool((f >= 0).all()) for f in forced]
        last = len(positions)  # ASR: past the last sampled position there is nothing to run
        while not keep_logits and last > 0 and given[last - 1]:
            last -= 1
        for attn in attention:  # depth KV caches restart at every frame
            attn.state.offset = 0
        tokens, logits = [], []
        x = base
        for k in range(last):
            table, head, (temperature, top_k, top_p) = positions[k]
            if k:
                x = base + F.embedding(tokens[-1], table)[:, None]  # [B, 1, depth_dim]
            y = lm.depth(x)[:, 0]  # [B, depth_dim]
            if given[k] and not keep_logits:
                tokens.append(forced[k])
                continue
            out = head(y)  # [B, V]
            if given[k]:
                token = forced[k]
            elif k == 0 and text_choices is not None:  # sample among the allowed ids only
                choices = torch.as_tensor(text_choices, device=out.device)  # [C]
                token = choices[sample_token(out[:, choices], temperature, top_k, top_p)]
            elif k == 0:
                token = sample_text_token(out, temperature, top_k, top_p, self._pad_temperature)
            else:
                token = sample_token(out, temperature, top_k, top_p)
            if forced[k] is not None and not given[k]:
                token = torch.where(forced[k] >= 0, forced[k], token)
            tokens.append(token)
            if keep_logits:
                logits.append(out)
        tokens += forced[last:]
        tokens = torch.stack(tokens, dim=1)  # [B, 1 + n_q]
        if not keep_logits:
            return StepOutput(tokens, None, None)
        return StepOutput(tokens, logits[0], torch.stack(logits[1:], dim=1))


def quantize_int8(lm: LM) -> LM:
    """A copy of `lm` for CPU inference whose nn.Linear layers (temporal and depth transformers,
    text head) and audio heads (as `int8_audio_heads`) hold int8 weights, a scale per output row."""
    from torch import nn

    lm = copy.deepcopy(lm).eval()
    lm.int8_audio_heads = nn.ModuleList()
    for weight in lm.audio_heads.detach():  # [card, depth_dim] each
        head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        head.weight.data.copy_(weight)
        lm.int8_audio_heads.append(head)
    with warnings.catch_warnings():  # torch.ao says it moves to torchao; torch==2.13 has it
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(lm, {nn.Linear}, dtype=torch.qint8, inplace=True)
