"""Text-alone samples (`voxlm lm train --text FILE`): the text_only layout, their share and
length in batches, no audio targets, the held-out loss untouched, a tiny model learning a sum
it only ever sees as text, `voxlm synth answers` and the errors."""
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_lm_train import corpora, dialogue_tokens, task, tokens  # noqa: F401 (fixtures)

from voxlm.cli import main
from voxlm.errors import VoxlmError
from voxlm.lm.data import LayoutConfig, LMData, TokenShards, config_for_shards, read_text_lines
from voxlm.lm.model import TEXT_EOW_ID, lm_config
from voxlm.lm.streams import TEXT_OFFSET, aligned, text_only
from voxlm.lm.train import stream_losses, target_counts
from voxlm.synth.text import every_answer, number_words
from voxlm.train import TrainConfig, Trainer, setup_distributed

torch.set_num_threads(1)
STEPS = 80
WORDS = [{"w": "Two", "start": 0.2, "end": 0.4}, {"w": "plus", "start": 0.5, "end": 0.7},
         {"w": "two", "start": 0.9, "end": 1.1}, {"w": "is", "start": 1.2, "end": 1.3},
         {"w": "four", "start": 2.3, "end": 2.6}]
IDS = [[3], [4, 5], [6], [7], [8, 9]]


def test_text_only_places_words_as_aligned_does_and_starts_no_audio():
    c = replace(lm_config("tiny"), context=128)
    codes = np.random.default_rng(0).integers(0, c.card, (c.n_q, 40))
    spoken = aligned(codes, WORDS, IDS, c)
    alone = text_only(WORDS, IDS, c, 40)
    assert alone.shape == (c.n_streams, 40)
    assert np.array_equal(alone[0], spoken[0, :40])  # the same text row
    assert (alone[1:] == c.audio_pad_id).all()  # every audio row "not started": never a target
    counts = target_counts(torch.from_numpy(alone)[None], c.text_card, c.n_q, c.card)
    assert counts[0] == 39 and counts[1:].sum() == 0
    short = text_only(WORDS, IDS, c, 30)  # "four": EOW at column 28, ids at 29 and 30
    assert np.flatnonzero(short[0] == TEXT_EOW_ID).size == 4  # a word whole or not at all
    assert np.array_equal(short[0, :28], spoken[0, :28]) and (short[0, 28:] == 0).all()


def _line_ids(data):
    return {tuple(map(tuple, line)) for line in data.text_lines}


def test_a_share_of_training_samples_is_text_alone(dialogue_tokens, tmp_path):  # noqa: F811
    shards = TokenShards(dialogue_tokens)
    c = config_for_shards(lm_config("tiny"), shards)
    lines = tmp_path / "answers.txt"
    lines.write_text("Two plus two is four.\nThree times three is nine.\n")
    plain = LMData(shards, c, LayoutConfig(mode="duplex", seq_len=48), batch_size=2, seed=3)
    mixed = LMData(shards, c, LayoutConfig(mode="duplex", seq_len=48, text_file=str(lines),
                                           text_share=0.5), batch_size=2, seed=3)
    assert len(mixed.text_lines) == 2 and all(len(line) == 5 for line in mixed.text_lines)
    words = {tuple(ids) for line in mixed.text_lines for ids in line}
    alone = 0
    for step in range(40):
        for index in range(2):
            sample = mixed.sample(step, index)
            assert np.array_equal(sample, mixed.sample(step, index))  # a function of (step, i)
            stream = int(mixed.global_batch(step)[index])
            if not (sample[1:] == c.audio_pad_id).all():  # spoken: the sample it would have been
                assert np.array_equal(sample, plain.sample(step, index))
                continue
            alone += 1
            assert sample.shape[1] == min(mixed.lengths[stream], 48)  # as long as it replaces
            row = sample[0]
            eows = np.flatnonzero(row == TEXT_EOW_ID)
            assert eows.size >= 1  # the first word within 3.2 s (40 frames)
            for start, end in zip(eows, [*eows[1:], len(row)]):
                ids = row[start + 1:end]
                ids = tuple(int(i) - TEXT_OFFSET for i in ids[ids >= TEXT_OFFSET])
                assert ids in words or end == len(row)  # the last word may be cut by the end
    assert 25 <= alone <= 55, alone
    (batch,) = mixed.batch(1)
    assert batch.shape[:2] == (2, c.n_rows)


def test_held_out_loss_and_other_modes_stay_spoken(tokens, dialogue_tokens, tmp_path,  # noqa: F811
                                                    capsys):
    lines = tmp_path / "answers.txt"
    lines.write_text("Two plus two is four.\n")
    held = LayoutConfig(mode="aligned", tts_delay=3, asr_delay=3, text_file=str(lines))
    t = task(tokens, layout=held, valid_every=1)
    t.setup(setup_distributed(), TrainConfig(steps=1))
    assert t.data.text_lines and not t.valid_data.text_lines  # the valid loss: speech only
    layout = LayoutConfig(mode="duplex", text_file=str(lines), text_share=0.9)
    shards = TokenShards(dialogue_tokens)
    c = config_for_shards(lm_config("tiny"), shards)
    for mode in ("continuation", "interleave"):
        with pytest.raises(VoxlmError, match="--text mixes text"):
            LMData(shards, c, replace(layout, mode=mode), batch_size=2)
    with pytest.raises(VoxlmError, match="--text-share 1.0"):
        LMData(shards, c, replace(layout, text_share=1.0), batch_size=2)
    with pytest.raises(VoxlmError, match="no such text file"):
        LMData(shards, c, replace(layout, text_file=str(tmp_path / "missing.txt")), batch_size=2)
    base = ["lm", "train", "--data", str(dialogue_tokens), "--config", "tiny", "--steps", "1",
            "--out", str(tmp_path / "run")]
    assert main([*base, "--mode", "continuation", "--text", str(lines)]) == 2
    assert main([*base, "--mode", "duplex", "--text", str(tmp_path / "nowhere.txt")]) == 2
    err = capsys.readouterr().err
    assert "--text mixes text into a model's text stream" in err and "--mode aligned or duplex" in err
    assert "--text " + str(tmp_path / "nowhere.txt") + ": no such text file" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "train_state.pt").exists()
    (tmp_path / "empty.txt").write_text("\n...\n")
    with pytest.raises(VoxlmError, match="no speakable lines"):
        LMData(shards, c, replace(layout, text_file=str(tmp_path / "empty.txt")), batch_size=2)


def test_a_tiny_model_learns_a_sum_it_only_sees_as_text(dialogue_tokens, tmp_path):  # noqa: F811
    lines = tmp_path / "answers.txt"
    lines.write_text("Two plus two is four.\n")
    shards = TokenShards(dialogue_tokens)
    layout = LayoutConfig(mode="duplex", seq_len=40, text_file=str(lines), text_share=0.5)
    probe = LMData(shards, config_for_shards(lm_config("tiny"), shards), layout, batch_size=1)
    probe = torch.from_numpy(probe.text_frames(40, np.random.default_rng(7)))[None]  # [1, S, 40]

    def text_loss(layout):  # of the probe's words, after STEPS steps of training with this layout
        t = task(dialogue_tokens, mode="duplex", layout=layout, batch_size=4)
        Trainer(t, TrainConfig(steps=STEPS, warmup=3, save_every=1000, log_every=10, seed=0),
                tmp_path / str(bool(layout.text_file)), progress=False).run()
        with torch.no_grad():
            output = t.lm.eval()(probe)
        assert stream_losses(output, probe)[1][1:].sum() == 0  # text alone: no audio scored
        targets = probe[0, 0, 1:]
        words = (targets >= TEXT_OFFSET) & (targets < t.model_config.text_start_id)
        return float(F.cross_entropy(output.text_logits[0, :-1][words], targets[words]))

    with_text, without = text_loss(layout), text_loss(replace(layout, text_file=""))
    assert with_text < 0.5 * without, (with_text, without)  # the words' tokens


def test_synth_answers_writes_every_right_answer(tmp_path, capsys):
    out = tmp_path / "answers.txt"
    assert main(["synth", "answers", "--out", str(out), "--max-operand", "12"]) == 0
    lines = out.read_text().splitlines()
    assert lines == every_answer(12) and len(set(lines)) == len(lines)
    value = {number_words(n): n for n in range(200)}
    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    sums = [re.fullmatch(r"(.+) (plus|minus|times) (.+) is (.+)\.", line.lower()) for line in lines]
    sums = [m.groups() for m in sums if m]
    assert len(sums) == 169 + 91 + 169  # every pair of 0..12, minus without negative results
    for a, op, b, result in sums:
        assert ops[op](value[a], value[b]) == value[result] >= 0, (a, op, b, result)
    assert {(value[a], value[b]) for a, op, b, _ in sums if op == "times"} == \
        {(a, b) for a in range(13) for b in range(13)}
    assert "Cat is spelled C, A, T." in lines and "Bees make honey." in lines
    assert f"wrote {out}: {len(lines)} answers" in capsys.readouterr().out
    assert main(["synth", "answers", "--out", str(out), "--max-operand", "-1"]) == 2
    assert "--max-operand -1" in capsys.readouterr().err


def test_read_text_lines_splits_words_as_the_corpora_do(corpora):  # noqa: F811
    from voxlm.lm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(corpora["tokenizer"])
    path = corpora["root"] / "lines.txt"
    path.write_text("Seven plus 5 is twelve.\n\n")
    (line,) = read_text_lines(path, tokenizer)
    spoken = ["Seven", "plus", "five", "is", "twelve"]  # numbers as words, no punctuation
    assert line == [tokenizer.encode(" " + w) for w in spoken]
    assert json.dumps(line)  # plain ints
