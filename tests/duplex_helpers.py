"""Tiny random dialogue models for the runtime, server and browser tests: a tiny codec, a tiny
duplex LM and a sentencepiece tokenizer trained on a few sentences, in memory or as the files
`voxlm lm train --mode duplex` writes. The LM's text head is biased towards word pieces (byte
and control pieces get no weight), so its inner text is readable words, never control bytes."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from voxlm.codec.model import Codec, codec_config
from voxlm.dialogue import DialogueModel
from voxlm.lm.model import LM, TEXT_EOW_ID, TEXT_PAD_ID, lm_config
from voxlm.lm.streams import TEXT_OFFSET, text_card
from voxlm.lm.tokenizer import load_tokenizer, train_tokenizer

SENTENCES = ["the cat sat on the mat", "hello there how are you", "a dog ran to the park",
             "we like tea and cake", "one two three four five six", "what is two plus three"]
HOP = 1280


def tokenizer(folder):
    """The tokenizer in `folder`, trained there the first time."""
    path = folder / "tokenizer.model"
    return load_tokenizer(path) if path.exists() else train_tokenizer(SENTENCES * 10, 300, path)


def word_piece_ids(tok) -> list:
    """Text stream ids of the tokenizer's pieces that hold letters (no bytes, no controls)."""
    return [i + TEXT_OFFSET for i in range(tok.vocab_size)
            if any(ch.isalpha() for ch in tok.piece(i)) and not tok.piece(i).startswith("<")]


def tiny_lm(tok, seed: int = 0, acoustic_delay: int = 1, text_bias: bool = True,
            listen: bool = False) -> LM:
    """With `listen`, a listen head too (created last: the other weights are the same)."""
    torch.manual_seed(seed)
    config = replace(lm_config("tiny"), text_card=text_card(tok.vocab_size),
                     acoustic_delay=acoustic_delay, listen=listen)
    lm = LM(config).eval()
    if text_bias:
        heads = [(lm.text_head.weight, 4.0)] + ([(lm.listen_head.weight, 8.0)] if listen else [])
        with torch.no_grad():
            for weight, gain in heads:  # [text_card, width]
                keep = torch.zeros(weight.shape[0], dtype=torch.bool)
                keep[word_piece_ids(tok) + [TEXT_PAD_ID, TEXT_EOW_ID]] = True
                weight[~keep] = 0.0  # logit 0, far below the biggest of the others
                weight[keep] *= gain
    return lm


def tiny_codec(seed: int = 0) -> Codec:
    """Random weights; random codebooks too (an untrained codec's are zeros: every frame would
    be code 0 and the user's audio would not matter)."""
    torch.manual_seed(seed)
    codec = Codec(codec_config("tiny")).eval()
    with torch.no_grad():
        for codebook in codec.quantizer._codebooks():
            codebook.embed.normal_(0.0, 0.3)
    return codec


def tiny_model(folder, seed: int = 0, acoustic_delay: int = 1, text_delay: int = 0,
               text_bias: bool = True, listen: bool = False) -> DialogueModel:
    tok = tokenizer(folder)
    return DialogueModel(tiny_lm(tok, seed, acoustic_delay, text_bias, listen), tiny_codec(seed),
                         tok, text_delay=text_delay, listen_delay=2)


def export_run(root, mode: str = "duplex", seed: int = 0, listen: bool = False):
    """What `voxlm lm train` writes: root/run (model.safetensors + tokenizer.model) for an LM
    trained in `mode` (`listen`: with a listen head), with the codec file its tokens name.
    -> the run folder."""
    from voxlm.codec.train import export_codec
    from voxlm.lm.data import LayoutConfig
    from voxlm.lm.tokenize_corpus import sha256_bytes
    from voxlm.lm.train import LMTask, LMTrainConfig

    tokens = root / f"tokens_{mode}"
    tokens.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(tokens)
    codec_path = export_codec(tiny_codec(seed), root / f"codec_{mode}.safetensors")
    header = {"frame_rate": 12.5,
              "codec": {"path": str(codec_path), "sha256": sha256_bytes(codec_path.read_bytes())},
              "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size,
                            "sha256": sha256_bytes(tok.model_proto)}}
    task = SimpleNamespace(shards=SimpleNamespace(header=header, folder=tokens),
                           lm=tiny_lm(tok, seed, listen=listen),
                           config=LMTrainConfig(layout=LayoutConfig(mode=mode)))
    run = root / f"run_{mode}{'_listen' if listen else ''}"
    LMTask.export(task, run)
    return run


def speech(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced buzz with gaps: [N] float32 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    gate = (np.sin(2 * np.pi * 3 * t) > -0.3).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 170 * t) * gate + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def count_int8_quantizations(monkeypatch) -> list:
    """Record every LM `lm.generate.quantize_int8` makes (the int8 runtime, as served): a list
    that grows by one model per quantization."""
    from voxlm.lm import generate

    quantized, real = [], generate.quantize_int8
    monkeypatch.setattr(generate, "quantize_int8", lambda lm: quantized.append(lm) or real(lm))
    return quantized
