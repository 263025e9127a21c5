"""LM: causality, KV-cached steps equal the full forward, depth loop, overfitting, delays, files."""
from dataclasses import replace

import pytest
import torch

from voxlm.cli import PAD_TEMPERATURE
from voxlm.lm.delays import delay_codes, undelay_codes
from voxlm.lm.generate import GREEDY, LMGen, SamplingOptions, sample_text_token, sample_token
from voxlm.lm.model import LM, TEXT_PAD_ID, LMConfig, lm_config, lm_loss, load_lm, save_lm
from voxlm.modules.transformer import Transformer, apply_rope, rope, rope_table


def random_tokens(config: LMConfig, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """[B, S, T]: text ids, then model and user codes."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, config.text_card, (batch, 1, length), generator=g)
    audio = torch.randint(0, config.card, (batch, config.n_streams - 1, length), generator=g)
    return torch.cat([text, audio], dim=1)


def tiny_lm(seed: int = 0, **changes) -> LM:
    torch.manual_seed(seed)
    return LM(replace(lm_config("tiny"), **changes)).eval()


def test_forward_shapes_and_stream_order():
    lm = tiny_lm()
    c = lm.config
    assert c.n_streams == 1 + 2 * c.n_q and c.delays == [0, 0, 1, 1, 0, 1, 1]
    out = lm(random_tokens(c, 2, 7))
    assert out.text_logits.shape == (2, 7, c.text_card)
    assert out.audio_logits.shape == (2, c.n_q, 7, c.card)
    with pytest.raises(ValueError, match="tokens must be"):
        lm(random_tokens(replace(c, user_audio=False), 2, 7))


def test_causal_in_time_and_depth():
    lm = tiny_lm()
    c = lm.config
    tokens = random_tokens(c, 2, 12)
    ref = lm(tokens)
    t = 5
    later = tokens.clone()
    later[:, :, t + 1:] = random_tokens(c, 2, 12 - t - 1, seed=1)
    out = lm(later)
    # frame t predicts frame t+1: its text logits see frames <= t only, its audio logits also
    # the frame-(t+1) tokens earlier in the depth order (teacher forcing)
    assert torch.equal(out.text_logits[:, :t + 1], ref.text_logits[:, :t + 1])
    assert torch.equal(out.audio_logits[:, :, :t], ref.audio_logits[:, :, :t])
    assert not torch.allclose(out.audio_logits[:, :, t], ref.audio_logits[:, :, t])
    for j in range(1, c.n_q + 1):  # change model codebook j of frame t+1 only
        one = tokens.clone()
        one[:, j, t + 1] = (one[:, j, t + 1] + 1) % c.card
        out = lm(one)
        assert torch.equal(out.text_logits[:, :t + 1], ref.text_logits[:, :t + 1])
        assert torch.equal(out.audio_logits[:, :j, :t + 1], ref.audio_logits[:, :j, :t + 1])
        if j < c.n_q:
            assert not torch.allclose(out.audio_logits[:, j:, t], ref.audio_logits[:, j:, t])
    user = tokens.clone()  # user audio is input only: frame t+1 of it does not reach frame t
    user[:, 1 + c.n_q:, t + 1] = (user[:, 1 + c.n_q:, t + 1] + 1) % c.card
    out = lm(user)
    assert torch.equal(out.audio_logits[:, :, :t + 1], ref.audio_logits[:, :, :t + 1])


@pytest.mark.parametrize("user_audio", [True, False])
def test_cached_steps_equal_forward(user_audio):
    lm = tiny_lm(user_audio=user_audio)
    c = lm.config
    length = c.context + 8  # past the KV window: the ring buffer wraps
    tokens = random_tokens(c, 2, length)
    ref = lm(tokens)
    gen = LMGen(lm, GREEDY)
    with gen.streaming(2):
        for t in range(length - 1):
            step = gen.step_with_logits(tokens[:, :, t], force_text=tokens[:, 0, t + 1],
                                        force_audio=tokens[:, 1:1 + c.n_q, t + 1])
            assert (step.text_logits - ref.text_logits[:, t]).abs().max() < 1e-4
            assert (step.audio_logits - ref.audio_logits[:, :, t]).abs().max() < 1e-4
            assert torch.equal(step.tokens, tokens[:, :1 + c.n_q, t + 1])


def test_prefill_then_step_equals_forward():
    lm = tiny_lm()
    tokens = random_tokens(lm.config, 1, 10)
    ref = lm(tokens)
    gen = LMGen(lm, GREEDY)
    with gen.streaming(1):
        gen.prefill(tokens[:, :, :6])
        step = gen.step_with_logits(tokens[:, :, 6])
    assert (step.text_logits - ref.text_logits[:, 6]).abs().max() < 1e-4
    assert torch.equal(step.tokens[:, 0], ref.text_logits[:, 6].argmax(-1))


def test_depth_steps_equal_parallel():
    lm = tiny_lm()
    c = lm.config
    x = torch.randn(3, 1 + c.n_q, c.depth_dim)
    ref = lm.depth(x)
    with torch.no_grad(), lm.depth.streaming(3):
        for _ in range(2):  # two frames: the cache restarts at each
            lm.depth.reset_streaming()
            steps = torch.cat([lm.depth(x[:, k:k + 1]) for k in range(1 + c.n_q)], dim=1)
            assert (steps - ref).abs().max() < 1e-5
    # greedy sampling draws the argmax of the logits it reports, position after position
    tokens = random_tokens(c, 2, 4)
    gen = LMGen(lm, GREEDY)
    with gen.streaming(2):
        for t in range(3):
            step = gen.step_with_logits(tokens[:, :, t])
            assert torch.equal(step.tokens[:, 0], step.text_logits.argmax(-1))
            assert torch.equal(step.tokens[:, 1:], step.audio_logits.argmax(-1))


def test_forcing_and_sampling():
    lm = tiny_lm()
    c = lm.config
    tokens = random_tokens(c, 2, 4)
    gen = LMGen(lm, SamplingOptions(temperature=1.0, top_k=5, top_p=0.9))
    torch.manual_seed(0)
    with gen.streaming(2):
        nxt = gen.step(tokens[:, :, 0], force_text=7)  # TTS: text given
        assert nxt.shape == (2, 1 + c.n_q) and (nxt[:, 0] == 7).all()
        assert ((nxt[:, 1:] >= 0) & (nxt[:, 1:] < c.card)).all()
        audio = torch.tensor([[1, 2, 3], [4, -1, 6]])  # ASR: audio given, -1 = sample
        nxt = gen.step(tokens[:, :, 1], force_audio=audio)
        assert torch.equal(nxt[0, 1:], audio[0]) and nxt[1, 1] == 4 and nxt[1, 3] == 6
        assert 0 <= nxt[0, 0] < c.text_card
    logits = torch.randn(4, 50)
    assert torch.equal(sample_token(logits, 0.0), logits.argmax(-1))
    assert torch.equal(sample_token(logits, 1.0, top_k=1), logits.argmax(-1))
    assert torch.equal(sample_token(logits, 1.0, top_p=1e-6), logits.argmax(-1))
    top3 = logits.topk(3).indices
    draws = torch.stack([sample_token(logits, 2.0, top_k=3) for _ in range(20)], 1)  # [4, 20]
    assert (draws[:, :, None] == top3[:, None]).any(-1).all()


def test_pad_temperature_draws_the_pad_at_its_own_odds():
    """The pad-or-not choice keeps the model's odds at pad temperature 1 where a cool text
    temperature sharpens it towards the likelier pad; the id after "not pad" is never the pad."""
    p_pad = torch.tensor([0.9, 0.6])
    logits = torch.full((2, 30), -30.0)
    logits[:, TEXT_PAD_ID] = p_pad.log()
    logits[:, 5], logits[:, 9] = (0.7 * (1 - p_pad)).log(), (0.3 * (1 - p_pad)).log()
    draws = 20000
    batch = logits.repeat(draws, 1)  # [2 * draws, 30]
    torch.manual_seed(0)
    calibrated = sample_text_token(batch, 0.7, 25, 0.0, pad_temperature=1.0).view(draws, 2)
    cool = sample_text_token(batch, 0.7, 25, 0.0).view(draws, 2)  # one draw at 0.7
    sharpened = (logits / 0.7).softmax(-1)[:, TEXT_PAD_ID]  # [2]: 0.96, 0.73
    for row, p in enumerate(p_pad.tolist()):
        share = (calibrated[:, row] == TEXT_PAD_ID).float().mean().item()
        assert abs(share - p) < 0.015, (row, share, p)
        assert abs((cool[:, row] == TEXT_PAD_ID).float().mean().item() - sharpened[row]) < 0.015
    words = calibrated[calibrated != TEXT_PAD_ID]
    assert set(words.tolist()) == {5, 9}
    # after "not pad" the id is drawn at the text temperature: 0.7 sharpens 70/30 towards id 5
    w = (0.7 / 0.3) ** (1 / 0.7)
    assert abs((words == 5).float().mean().item() - w / (1 + w)) < 0.02
    # at pad temperature 0.5 the odds are squared: 0.6 -> 0.69
    squared = sample_text_token(batch, 0.7, 25, 0.0, pad_temperature=0.5).view(draws, 2)
    assert abs((squared[:, 1] == TEXT_PAD_ID).float().mean().item() - 0.36 / 0.52) < 0.015
    with pytest.raises(Exception, match="pad-temperature"):
        SamplingOptions(pad_temperature=-1)
    # greedy text stays greedy; the CLI's default (read without torch) is the dataclass's
    scores = torch.randn(8, 30)
    assert torch.equal(sample_text_token(scores, 0.0, pad_temperature=1.0), scores.argmax(-1))
    assert PAD_TEMPERATURE == SamplingOptions.pad_temperature


def test_int8_generation_is_close():
    lm = tiny_lm()
    tokens = random_tokens(lm.config, 1, 6)
    ref = lm(tokens)
    gen = LMGen(lm, GREEDY, int8=True)
    with gen.streaming(1):
        for t in range(5):
            step = gen.step_with_logits(tokens[:, :, t], force_text=tokens[:, 0, t + 1],
                                        force_audio=tokens[:, 1:1 + lm.config.n_q, t + 1])
    scale = ref.text_logits[:, 4].abs().max()
    assert (step.text_logits - ref.text_logits[:, 4]).abs().max() < 0.1 * scale


def test_dropout_acts_in_training_only():
    """With dropout, training forwards differ from one another; in eval mode the model equals
    the same weights built without dropout (streaming included), so shipped files are unchanged."""
    lm, plain = tiny_lm(dropout=0.3), tiny_lm()
    assert lm.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(lm.state_dict())
    tokens = random_tokens(lm.config, 2, 8)
    with torch.no_grad():
        assert torch.equal(lm(tokens).audio_logits, plain(tokens).audio_logits)
        lm.train()
        a, b = lm(tokens).audio_logits, lm(tokens).audio_logits
        assert (a - b).abs().max() > 1e-3
        lm.eval()
        with lm.streaming(2):
            steps = torch.cat([lm.hidden(tokens[:, :, t:t + 1]) for t in range(8)], dim=1)
        assert (steps - plain.hidden(tokens)).abs().max() < 1e-4


def test_loss_shift_and_padding():
    lm = tiny_lm()
    c = lm.config
    tokens = random_tokens(c, 2, 6)
    # logits at frame t that point at the tokens of frame t+1 give a loss near zero
    text = torch.full((2, 6, c.text_card), -30.0)
    audio = torch.full((2, c.n_q, 6, c.card), -30.0)
    for t in range(5):
        text[torch.arange(2), t, tokens[:, 0, t + 1]] = 30.0
        for k in range(c.n_q):
            audio[torch.arange(2), k, t, tokens[:, 1 + k, t + 1]] = 30.0
    losses = lm_loss((text, audio), tokens)
    assert losses["text"] < 1e-3 and losses["audio"] < 1e-3 and len(losses["per_codebook"]) == c.n_q
    # "not started" targets are ignored; a real target at the same place is not
    padded = tokens.clone()
    padded[:, 0, 1:3], padded[:, 2, 1:4] = c.text_start_id, c.audio_pad_id
    text[:, 0:2] = audio[:, 1, 0:3] = 0.0
    assert lm_loss((text, audio), padded)["total"] < 1e-3
    assert lm_loss((text, audio), tokens)["total"] > 1.0


def test_tiny_lm_overfits():
    lm = tiny_lm().train()
    tokens = random_tokens(lm.config, 2, 12)
    optimizer = torch.optim.Adam(lm.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = lm_loss(lm(tokens), tokens)["total"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_delay_round_trip():
    codes = torch.randint(0, 1024, (2, 4, 9))
    delays = [0, 1, 1, 3]
    delayed = delay_codes(codes, delays)
    assert torch.equal(delayed[:, 3, :3], torch.full((2, 3), 1024))
    assert torch.equal(delayed[:, 1, 1:], codes[:, 1, :-1])
    assert torch.equal(delayed[:, 0], codes[:, 0])
    back = undelay_codes(delayed, delays)
    assert torch.equal(back[:, :, :9 - 3], codes[:, :, :9 - 3])
    assert torch.equal(back[:, 3, 6:], torch.full((2, 3), 1024))
    assert torch.equal(delay_codes(codes, 0), codes)
    with pytest.raises(ValueError):
        delay_codes(codes, [0, 1])


def test_save_load_round_trip(tmp_path):
    lm = tiny_lm(acoustic_delay=2)
    path = save_lm(tmp_path / "lm.safetensors", lm)
    loaded = load_lm(path)
    assert loaded.config == lm.config
    tokens = random_tokens(lm.config, 1, 5)
    assert torch.equal(loaded(tokens).audio_logits, lm(tokens).audio_logits)


def test_int4_file_is_half_of_int8_and_close(tmp_path):
    """int4 groups: exact on weights already on their grid, about half the bytes of int8 on a
    real model, logits close to the float model's (`voxlm lm export --int4`)."""
    from safetensors import safe_open

    from voxlm.checkpoint import INT4_GROUP, dequantize_int4, quantize_int4

    grid = torch.randint(-7, 8, (3, 2 * INT4_GROUP)).float()
    grid[:, 0], grid[:, INT4_GROUP] = 7, -7  # every group's largest weight sets its scale
    scaled = grid * torch.tensor([[0.5], [1.0], [2.0]])
    assert torch.equal(dequantize_int4(*quantize_int4(scaled)), scaled)
    lm = tiny_lm(dim=64, depth_dim=64, card=256)
    int8 = save_lm(tmp_path / "int8.safetensors", lm, dtype=torch.float16, int8=True)
    int4 = save_lm(tmp_path / "int4.safetensors", lm, dtype=torch.float16, int4=True)
    assert int4.stat().st_size < 0.65 * int8.stat().st_size
    with safe_open(str(int4), framework="pt") as handle:
        assert any(name.endswith(".int4") for name in handle.keys())
    kept = save_lm(tmp_path / "kept.safetensors", lm, dtype=torch.float16, int4=True,
                   keep_int8=("audio_emb",))  # `lm export --int4 --keep-int8 audio_emb`
    with safe_open(str(kept), framework="pt") as handle:
        names = set(handle.keys())
    assert "audio_emb.int8" in names and "audio_emb.int4" not in names
    assert "depth_audio_emb.int4" in names  # a prefix of the name, not a part of it
    assert int4.stat().st_size < kept.stat().st_size < int8.stat().st_size
    tokens = random_tokens(lm.config, 2, 8)
    ref = lm(tokens).audio_logits
    for path, tolerance in ((int8, 0.03), (int4, 0.25), (kept, 0.25)):
        assert (load_lm(path)(tokens).audio_logits - ref).abs().max() < tolerance * ref.abs().max()


def test_ring_buffer_steps_after_wrap_and_rope_table():
    torch.manual_seed(0)
    transformer = Transformer(16, 2, 2, context=4)
    x = torch.randn(1, 15, 16)
    with torch.no_grad():
        ref = transformer(x)
        with transformer.streaming(1):
            parts = [transformer(p) for p in torch.split(x, [1, 1, 1, 1, 1, 6, 1, 3], dim=1)]
    assert (torch.cat(parts, 1) - ref).abs().max() < 1e-5
    q = torch.randn(2, 3, 5, 8)  # [B, H, T, Dh]
    cos, sin = rope_table(7, 8, "cpu")
    fast = apply_rope(q.transpose(1, 2)[:, :, None], cos[2:7], sin[2:7])[:, :, 0].transpose(1, 2)
    assert (fast - rope(q, torch.arange(2, 7))).abs().max() < 1e-6


@pytest.mark.parametrize("length", [9, 40])
def test_bf16_attention_on_cpu_matches_float32(length):
    """Under bf16 autocast, short sequences (the depth transformer's) attend in float32 and long
    ones in bf16; both stay within bf16 rounding of the float32 model, gradients included."""
    torch.manual_seed(0)
    stack = Transformer(64, 2, 4, 64, 2, rope=length > 16)
    x = torch.randn(6, length, 64, requires_grad=True)
    weights = torch.randn(6, length, 64)  # a loss whose gradient the final norm does not cancel
    reference = stack(x)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = stack(x)
    (grad,) = torch.autograd.grad((y.float() * weights).sum(), x)
    assert 0 < (y.float() - reference).abs().max() < 0.05 * reference.abs().max()  # bf16 ran
    assert (grad - grad_ref).abs().max() < 0.05 * grad_ref.abs().max()
