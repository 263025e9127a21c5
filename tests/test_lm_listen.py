"""The listen head (`voxlm lm train --listen-weight`): the user's words as a target row lagging
their audio, batches that carry it, its loss, a duplex fine-tune that adds a head to a model
without one and lowers its loss, the exported model still generating from the S input rows."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_lm_train import corpora, dialogue_tokens, task  # noqa: F401 (fixtures)

from voxlm.errors import VoxlmError
from voxlm.lm.data import LayoutConfig, LMData, TokenShards, config_for_shards
from voxlm.lm.generate import GREEDY, LMGen
from voxlm.lm.model import (LM, TEXT_EOW_ID, TEXT_PAD_ID, lm_config, load_lm, read_audio_tables,
                            save_lm)
from voxlm.lm.streams import FRAME_RATE, TEXT_OFFSET, duplex, listen_row
from voxlm.lm.train import stream_losses
from voxlm.train import TrainConfig, Trainer

torch.set_num_threads(1)
USER = [{"w": "What", "start": 0.3, "end": 0.6}, {"w": "is", "start": 0.66, "end": 0.75},
        {"w": "eight", "start": 1.1, "end": 1.4}, {"w": "minus", "start": 1.4, "end": 1.9},
        {"w": "two", "start": 2.0, "end": 2.3}]


def config(**changes):
    return replace(lm_config("tiny"), context=128, **changes)  # n_q 3, card 64, text_card 40


def test_listen_row_lags_the_user_audio_by_the_delay():
    c = config(listen=True)
    ids = [[3], [4], [5, 6], [7], [8, 9]]
    length = 40
    for delay, text_delay in ((0, 0), (3, 0), (3, -2)):
        row = listen_row(USER, ids, c, length, delay, text_delay)
        audio_at = 1 + max(-text_delay, 0)  # the user's first audio column in duplex frames
        assert row.shape == (length,) and row[0] == c.text_start_id
        eows = np.flatnonzero(row == TEXT_EOW_ID)
        assert len(eows) == len(USER)
        assert eows[0] == audio_at + delay + int(0.3 * FRAME_RATE) - 1
        assert eows[2] == audio_at + delay + int(1.1 * FRAME_RATE) - 1  # a gap before "eight"
        words = [list(row[e + 1:e + 1 + len(t)] - TEXT_OFFSET) for e, t in zip(eows, ids)]
        assert words == ids
        assert ((row[1:] == TEXT_PAD_ID) | (row[1:] == TEXT_EOW_ID) | (row[1:] >= TEXT_OFFSET)).all()
    short = listen_row(USER, ids, c, 30, 3)  # "two" at 2.0 s + 3 frames runs past 30 columns
    assert len(short) == 30 and (np.flatnonzero(short == TEXT_EOW_ID) < 30).all()
    with pytest.raises(ValueError, match="listen_delay"):
        listen_row(USER, ids, c, length, -1)
    with pytest.raises(ValueError, match="one token list per word"):
        listen_row(USER, ids[:2], c, length, 3)


def test_the_listen_row_is_a_target_never_an_input():
    c = config(listen=True)
    torch.manual_seed(0)
    lm = LM(c).eval()
    rng = np.random.default_rng(0)
    frames = duplex(rng.integers(0, c.card, (3, 30)), rng.integers(0, c.card, (3, 30)), USER[:2],
                    [[3], [4]], c)
    heard = listen_row(USER, [[3], [4], [5, 6], [7], [8, 9]], c, frames.shape[1], 3)
    stacked = torch.from_numpy(np.concatenate([frames, heard[None]]))[None]  # [1, S + 1, L]
    other = stacked.clone()
    other[:, -1, 1:] = TEXT_PAD_ID  # another listen row: the same logits
    with torch.no_grad():
        a, b, plain = lm(stacked), lm(other), lm(stacked[:, :c.n_streams])
    assert a.listen_logits.shape == (1, stacked.shape[2], c.text_card)
    assert torch.equal(a.audio_logits, b.audio_logits) and torch.equal(a.listen_logits, b.listen_logits)
    assert torch.equal(a.text_logits, plain.text_logits)
    sums, counts = stream_losses(a, stacked)
    assert len(sums) == 2 + c.n_q
    targets = stacked[0, -1, 1:]
    keep = targets != c.text_card
    expected = F.cross_entropy(a.listen_logits[0, :-1][keep], targets[keep], reduction="sum")
    assert torch.allclose(sums[-1], expected) and counts[-1] == keep.sum()
    assert len(stream_losses(plain, stacked[:, :c.n_streams])[0]) == 1 + c.n_q  # no row: no loss


def test_duplex_batches_carry_the_users_words(dialogue_tokens):  # noqa: F811
    shards = TokenShards(dialogue_tokens)
    c = replace(config_for_shards(lm_config("tiny"), shards), listen=True)
    data = LMData(shards, c, LayoutConfig(mode="duplex", listen_delay=2), batch_size=2)
    (batch,) = data.batch(0)
    assert batch.shape[1] == c.n_streams + 1
    for index in range(len(data.streams)):
        frames = data.layout_frames(index, np.random.default_rng(0))
        item, _ = data.streams[index]
        user_ids = [i for w in shards.words(item, 0) for i in w["ids"]]
        row = frames[-1]
        heard = row[(row >= TEXT_OFFSET) & (row < c.text_start_id)] - TEXT_OFFSET
        assert list(heard) == user_ids[:len(heard)] and len(heard) >= len(user_ids) - 3
        first = shards.words(item, 0)[0]
        assert np.flatnonzero(row == TEXT_EOW_ID)[0] == 1 + 2 + int(first["start"] * FRAME_RATE) - 1
    with pytest.raises(VoxlmError, match="listen head learns the user's words"):
        LMData(shards, c, LayoutConfig(mode="aligned"), batch_size=2)


def test_fine_tune_adds_a_listen_head_that_learns(dialogue_tokens, tmp_path):  # noqa: F811
    Trainer(task(dialogue_tokens, mode="duplex"),
            TrainConfig(steps=2, warmup=1, save_every=100, seed=0), tmp_path / "a",
            progress=False).run()
    source = load_lm(tmp_path / "a")
    assert not source.config.listen
    tuned = task(dialogue_tokens, mode="duplex", init=str(tmp_path / "a"), listen_weight=1.0,
                 batch_size=2)
    Trainer(tuned, TrainConfig(steps=30, warmup=2, save_every=100, log_every=1, seed=0),
            tmp_path / "b", progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    listen = [r["listen_loss"] for r in rows]
    assert np.mean(listen[-5:]) < 0.7 * np.mean(listen[:3])
    lm = load_lm(tmp_path / "b")
    assert lm.config.listen and lm.config == replace(source.config, listen=True)
    for name, weight in source.state_dict().items():  # the source's weights were the start
        assert name in lm.state_dict()
    gen = LMGen(lm, GREEDY)  # generation feeds the S input rows only
    frame = torch.tensor([[lm.config.text_start_id] + [lm.config.audio_pad_id] * (lm.config.n_streams - 1)])
    with gen.streaming(1):
        out = gen.step(frame)
    assert out.shape == (1, 1 + lm.config.n_q)
    with pytest.raises(VoxlmError, match="--listen-weight"):
        task(dialogue_tokens, mode="duplex", listen_weight=-1)


def test_user_codebooks_reads_the_users_words_not_their_voice():
    """LMConfig.user_codebooks 1: the user's codebooks 2.. change nothing, codebook 1 does, and
    the KV-cached step gives the offline logits."""
    c = config(user_codebooks=1)
    torch.manual_seed(0)
    lm = LM(c).eval()
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(duplex(rng.integers(0, c.card, (3, 20)), rng.integers(0, c.card, (3, 20)),
                                     USER[:2], [[3], [4]], c))[None]  # [1, S, L]
    voice, words = frames.clone(), frames.clone()
    voice[:, 1 + c.n_q + 1:, 3:] = (voice[:, 1 + c.n_q + 1:, 3:] + 7) % c.card  # other user voice codes
    words[:, 1 + c.n_q, 3:] = (words[:, 1 + c.n_q, 3:] + 7) % c.card  # other user codebook-1 codes
    with torch.no_grad():
        a, b, w = lm(frames), lm(voice), lm(words)
        with lm.streaming(1):
            h = torch.cat([lm.hidden(frames[:, :, t:t + 1]) for t in range(frames.shape[2])], 1)
    assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.audio_logits, b.audio_logits)
    assert not torch.allclose(a.text_logits, w.text_logits)
    assert torch.allclose(h, lm.hidden(frames), atol=1e-5)
    full = LM(config()).eval()
    full.load_state_dict(lm.state_dict())  # the same weights reading every codebook: they matter
    with torch.no_grad():
        assert not torch.allclose(full(frames).text_logits, full(voice).text_logits)
    with pytest.raises(ValueError, match="user_codebooks"):
        LM(config(user_codebooks=4))


def test_export_stores_unread_user_tables_as_one_row(tmp_path):
    """An exported model keeps only the "not started" row of the audio tables its layout never
    reads: the same logits from the reloaded model, a smaller file, any other user codes heard
    as before."""
    assert read_audio_tables(config(), "aligned") == 3 and read_audio_tables(config(), "duplex") == 6
    c = config(user_codebooks=1)
    assert read_audio_tables(c, "duplex") == 4 and read_audio_tables(c, "aligned") == 3
    torch.manual_seed(0)
    lm = LM(c).eval()
    rng = np.random.default_rng(2)
    frames = torch.from_numpy(duplex(rng.integers(0, c.card, (3, 20)), rng.integers(0, c.card, (3, 20)),
                                     USER[:2], [[3], [4]], c))[None]  # [1, S, L]
    full, small = save_lm(tmp_path / "full.safetensors", lm), save_lm(
        tmp_path / "small.safetensors", lm, read_tables=read_audio_tables(c, "duplex"))
    assert full.stat().st_size - small.stat().st_size > 1.9 * (c.card + 1) * c.dim * 4  # 2 tables
    back = load_lm(small)
    assert back.audio_emb.shape == lm.audio_emb.shape
    assert torch.equal(back.audio_emb[:4], lm.audio_emb[:4])
    with torch.no_grad():
        a, b = lm(frames), back(frames)
    assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.audio_logits, b.audio_logits)


def test_fine_tune_with_user_codebooks_keeps_the_weights(dialogue_tokens, tmp_path):  # noqa: F811
    Trainer(task(dialogue_tokens, mode="duplex"),
            TrainConfig(steps=2, warmup=1, save_every=100, seed=0), tmp_path / "a",
            progress=False).run()
    tuned = task(dialogue_tokens, mode="duplex", init=str(tmp_path / "a"), user_codebooks=1)
    Trainer(tuned, TrainConfig(steps=2, warmup=1, save_every=100, seed=0), tmp_path / "b",
            progress=False).run()
    source, lm = load_lm(tmp_path / "a"), load_lm(tmp_path / "b")
    assert source.config.user_codebooks == 0 and lm.config == replace(source.config, user_codebooks=1)
    with pytest.raises(VoxlmError, match="pass 1 to 3"):
        Trainer(task(dialogue_tokens, mode="duplex", init=str(tmp_path / "a"), user_codebooks=9),
                TrainConfig(steps=1, warmup=1, seed=0), tmp_path / "c", progress=False).run()
    with pytest.raises(VoxlmError, match="use --mode duplex"):
        task(dialogue_tokens, mode="aligned", user_codebooks=1)


# ---------------------------------------------------------------- the runtime

def listen_model(folder):
    """A tiny random duplex model with a listen head biased towards word pieces."""
    from duplex_helpers import tiny_codec, tiny_lm, tokenizer

    from voxlm.dialogue import DialogueModel

    tok = tokenizer(folder)
    return DialogueModel(tiny_lm(tok, listen=True), tiny_codec(), tok, listen_delay=2)


def test_runtime_listen_head_equals_offline_and_writes_words(tmp_path):
    from duplex_helpers import speech

    from voxlm.chat import ChatOptions, chat
    from voxlm.dialogue import DuplexRuntime, TextDecoder

    model = listen_model(tmp_path)
    fed, heard, words = [], [], []
    with DuplexRuntime(model, 1, GREEDY) as runtime:
        step = runtime.gen.step
        runtime.gen.step = lambda frame, *a, **k: (fed.append(frame.clone()), step(frame, *a, **k))[1]
        session = runtime.open()
        session.feed(speech(2.0))
        for _ in range(30):
            out = runtime.step()[session.id]
            heard.append(int(runtime.gen.heard[0]))
            words += [out.heard_word] if out.heard_word else []
    with torch.no_grad():  # the same frames offline: the same listen ids, column by column
        offline = model.lm(torch.stack(fed, dim=2)).listen_logits[0].argmax(-1)  # [T]
    assert offline.tolist() == heard
    decoder = TextDecoder(model.tokenizer, model.heard_at)
    expected = [w for c, i in enumerate(heard, start=1) for w in [decoder.push(i, c)[1]] if w]
    assert words == expected and words  # a word's start: its first column - heard_at, in s
    assert all(0 <= w.start <= w.end <= 31 / FRAME_RATE for w in words)
    result = chat(model, speech(1.5), ChatOptions(max_seconds=3.0, sampling=GREEDY), seed=0)
    assert result.heard and all(w.w for w in result.heard)
    assert [w.start for w in result.heard] == sorted(w.start for w in result.heard)
