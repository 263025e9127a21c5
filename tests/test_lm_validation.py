"""`voxlm lm train --valid-every`: held-out loss rows at the right steps equal to `eval lm`'s
validation_losses on the same weights, best.safetensors holding the best step's weights, exact
resume of rows and best file, and the error for tokens without a valid split."""
import json
import shutil
import struct

import pytest
import torch
from test_lm_train import corpora, task, tokens  # noqa: F401 (fixtures)

from voxlm.cli import main
from voxlm.errors import VoxlmError
from voxlm.eval.lm import lm_extra, validation_losses
from voxlm.lm.data import LayoutConfig
from voxlm.lm.model import load_lm
from voxlm.lm.speech import load_speech_lm
from voxlm.train import TrainConfig, Trainer

torch.set_num_threads(1)
TIMING = ("seconds_per_step", "frames_per_s", "tokens_per_s")


def config(steps=6) -> TrainConfig:
    return TrainConfig(steps=steps, warmup=2, save_every=2, log_every=1, seed=5)


def valid_task(tokens_dir, **changes):  # noqa: F811
    """Aligned, text leading: the layout of eval lm's "aligned TTS (text leads)" rows."""
    layout = LayoutConfig(mode="aligned", tts_share=1.0, tts_delay=3, asr_delay=3)
    return task(tokens_dir, **{"layout": layout, "valid_every": 2, **changes})


def rows(run) -> list:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").open()]


def held_out(path, tokens_dir) -> dict:  # noqa: F811
    """validation_losses' row of the training layout on split valid."""
    (row,) = [r for r in validation_losses(load_lm(path), tokens_dir, 50, lm_extra(path))
              if r["split"] == "valid" and r["layout"] == "aligned TTS (text leads)"]
    return row


def contents(path) -> tuple:
    """A safetensors file as (header, tensor bytes): safetensors writes the metadata keys in
    a random order (a Rust HashMap), so two writes of the same model differ in that alone."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    return header, data[8 + size:]


def close(row: dict, ref: dict):
    assert abs(row["valid_text_loss"] - ref["text"]) < 1e-5
    assert abs(row["valid_audio_loss"] - ref["audio"]) < 1e-5
    assert abs(row["valid_semantic_loss"] - ref["semantic"]) < 1e-5
    assert abs(row["valid_loss"] - (ref["text"] + ref["audio"])) < 2e-5


def test_valid_rows_and_best_weights(tokens, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    trainer = Trainer(valid_task(tokens, lr=3e-2), config(16), run, progress=False)
    trainer.run()
    valid = [r for r in rows(run) if "valid_loss" in r]
    assert [r["step"] for r in valid] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert set(valid[0]) == {"step", "valid_loss", "valid_text_loss", "valid_audio_loss",
                             "valid_semantic_loss"}
    assert len([r for r in rows(run) if "loss" in r]) == 16  # training rows unchanged
    assert all(r["valid_text_loss"] > 0 and r["valid_audio_loss"] > 0 for r in valid)
    close(valid[-1], held_out(run / "model.safetensors", tokens))  # the last step's weights
    best = min(valid, key=lambda r: r["valid_loss"])
    assert trainer.best_step == best["step"] < 16  # it overfits its 7 items after that
    assert abs(trainer.best_valid_loss - best["valid_loss"]) < 1e-6
    close(best, held_out(run / "best.safetensors", tokens))
    state = torch.load(run / "train_state.pt", weights_only=False)
    assert (state["best_step"], state["best_valid_loss"]) == (trainer.best_step,
                                                             trainer.best_valid_loss)
    # the same run stopped at the best step holds the weights best.safetensors has
    probe = Trainer(valid_task(tokens, lr=3e-2), config(16), tmp_path / "probe", progress=False)
    probe.run(stop_at=trainer.best_step)
    saved = load_lm(run / "best.safetensors").state_dict()
    assert all(torch.equal(t, probe.task.lm.state_dict()[k]) for k, t in saved.items())
    # a model file like model.safetensors: load_speech_lm and `voxlm lm export` take it
    assert load_speech_lm(run / "best.safetensors").extra["mode"] == "aligned"
    assert main(["lm", "export", str(run / "best.safetensors"), str(tmp_path / "best.safetensors")]) == 0
    assert load_speech_lm(tmp_path / "best.safetensors").tokenizer().vocab_size > 0


def test_resume_reproduces_valid_rows_and_best_file(tokens, tmp_path):  # noqa: F811
    whole = Trainer(valid_task(tokens, lr=3e-2), config(), tmp_path / "whole", progress=False)
    whole.run()
    killed = Trainer(valid_task(tokens, lr=3e-2), config(), tmp_path / "killed", progress=False)
    killed.run(stop_at=5)  # checkpoint (and validation) at step 4; step 5 dies with the process
    resumed = Trainer(valid_task(tokens, lr=3e-2), config(), tmp_path / "killed", progress=False)
    resumed.run()
    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")
    for name in ("best.safetensors", "model.safetensors"):
        assert contents(tmp_path / "killed" / name) == contents(tmp_path / "whole" / name), name
    assert (resumed.best_step, resumed.best_valid_loss) == (whole.best_step, whole.best_valid_loss)


def test_tokens_without_a_valid_split(tokens, tmp_path):  # noqa: F811
    folder = tmp_path / "train_only"
    shutil.copytree(tokens, folder)
    index = [json.loads(line) for line in (folder / "index.jsonl").open()]
    (folder / "index.jsonl").write_text("".join(json.dumps({**r, "split": "train"}) + "\n"
                                                for r in index))
    with pytest.raises(VoxlmError, match="have no items in split valid.*drop --valid-every"):
        valid_task(folder)
    valid_task(folder, valid_every=0)  # no validation asked: no valid split needed
    with pytest.raises(VoxlmError, match="--valid-limit 0"):
        valid_task(tokens, valid_limit=0)
