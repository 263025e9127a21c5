"""FSDP2 in the shared loop (`--fsdp`): two processes over gloo train the tiny LM to the weights,
optimizer state and curve of one process on the same global batch; a sharded run stopped after
its checkpoint resumes to the uninterrupted run's exact state; checkpoints cross between
sharded and unsharded runs both ways; the model file is a normal one."""
import json
import os
import shutil
import socket
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_lm_train import corpora, tokens  # noqa: F401 (fixtures)

from voxlm.cli import main
from voxlm.errors import VoxlmError
from voxlm.lm.data import LayoutConfig
from voxlm.lm.model import lm_config, load_lm
from voxlm.lm.train import LMTask, LMTrainConfig
from voxlm.train import TrainConfig, Trainer

torch.set_num_threads(1)
STEPS = 4
CURVE = ("loss", "text_loss", "audio_loss", "semantic_loss", "grad_norm", "lr")


def config(fsdp: bool) -> TrainConfig:
    return TrainConfig(steps=STEPS, warmup=2, save_every=2, log_every=1, seed=3, fsdp=fsdp)


def lm_task(tokens_dir) -> LMTask:  # 2 microbatches per process: gradient sync on the last only
    train = LMTrainConfig(batch_size=4, accum=2, lr=3e-3, valid_every=2,
                          layout=LayoutConfig(mode="aligned", tts_delay=3, asr_delay=3))
    return LMTask(tokens_dir, lm_config("tiny"), train, progress=False)


def _sharded_runs(rank, port, tokens_dir, root):
    """One of two processes: a whole run, a run stopped after step 3 (checkpoint at 2) and
    resumed, and a one-process checkpoint resumed, all with FSDP2."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        whole = Trainer(lm_task(tokens_dir), config(True), root / "fsdp", progress=False)
        assert whole.sharded
        whole.run()
        Trainer(lm_task(tokens_dir), config(True), root / "killed", progress=False).run(stop_at=3)
        if rank == 0:  # its step-2 checkpoint, for one process to resume
            shutil.copytree(root / "killed", root / "fsdp_to_one")
        dist.barrier()
        Trainer(lm_task(tokens_dir), config(True), root / "killed", progress=False).run()
        Trainer(lm_task(tokens_dir), config(True), root / "one_to_fsdp", progress=False).run()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(run) -> dict:
    return torch.load(run / "train_state.pt", weights_only=False)


def _curve(run) -> list:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return [{k: row[k] for k in ("step", *CURVE)} for row in rows if "loss" in row]


def _valid(run) -> list:  # the held-out rows (--valid-every 2: steps 2 and 4)
    return [row for row in map(json.loads, (run / "metrics.jsonl").open()) if "valid_loss" in row]


def _flat(obj, prefix="") -> dict:
    """Every tensor and number of a nested state dict, by path."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    return {k: v for key, value in items for k, v in _flat(value, f"{prefix}/{key}").items()}


def _close(a: dict, b: dict, exact: bool):
    """Weights and optimizer state of two train_state.pt files: equal, or within float noise."""
    for part in ("modules", "optimizers"):
        flat_a, flat_b = _flat(a[part]), _flat(b[part])
        assert flat_a.keys() == flat_b.keys(), part
        for key, value in flat_a.items():
            other = flat_b[key]
            if not torch.is_tensor(value):
                assert value == other, key
            elif exact:
                assert torch.equal(value, other), key
            else:
                assert torch.allclose(value, other, rtol=1e-4, atol=1e-6), key


def test_fsdp_two_processes_equal_one_and_resume_exactly(tokens, tmp_path):  # noqa: F811
    Trainer(lm_task(tokens), config(False), tmp_path / "one", progress=False).run()
    stopped = Trainer(lm_task(tokens), config(False), tmp_path / "one_to_fsdp", progress=False)
    stopped.run(stop_at=3)  # a one-process checkpoint at step 2 for the sharded run to resume
    mp.spawn(_sharded_runs, args=(_free_port(), tokens, tmp_path), nprocs=2)
    resumed = Trainer(lm_task(tokens), config(True), tmp_path / "fsdp_to_one", progress=False)
    assert not resumed.sharded  # one process: --fsdp changes nothing
    resumed.run()

    one = _state(tmp_path / "one")
    sharded = _state(tmp_path / "fsdp")
    assert sharded["step"] == STEPS and sharded["train_config"]["fsdp"]
    _close(one, sharded, exact=False)
    for a, b in zip(_curve(tmp_path / "one"), _curve(tmp_path / "fsdp"), strict=True):
        assert a["step"] == b["step"] and all(abs(a[k] - b[k]) < 1e-5 for k in CURVE), (a, b)
    _close(sharded, _state(tmp_path / "killed"), exact=True)
    assert _curve(tmp_path / "killed") == _curve(tmp_path / "fsdp")
    _close(one, _state(tmp_path / "fsdp_to_one"), exact=False)
    _close(one, _state(tmp_path / "one_to_fsdp"), exact=False)
    exported = load_lm(tmp_path / "fsdp").state_dict()  # a normal model file
    assert all(torch.equal(t, sharded["modules"]["lm"][k]) for k, t in exported.items())
    # validation under FSDP: every process runs the forward, the rows match one process's
    assert [r["step"] for r in _valid(tmp_path / "fsdp")] == [2, 4]
    for a, b in zip(_valid(tmp_path / "one"), _valid(tmp_path / "fsdp"), strict=True):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-5 for k in a), (a, b)
    assert _valid(tmp_path / "killed") == _valid(tmp_path / "fsdp")
    assert sharded["best_step"] == _state(tmp_path / "killed")["best_step"] == one["best_step"]
    best = load_lm(tmp_path / "fsdp" / "best.safetensors").state_dict()  # gathered weights
    again = load_lm(tmp_path / "killed" / "best.safetensors").state_dict()
    assert all(torch.equal(t, again[k]) for k, t in best.items())
    if sharded["best_step"] == STEPS:
        assert all(torch.equal(t, exported[k]) for k, t in best.items())



def test_fsdp_flag_and_a_task_without_shard(tokens, tmp_path):  # noqa: F811
    args = ["lm", "train", "--data", str(tokens), "--out", str(tmp_path / "run"), "--config",
            "tiny", "--steps", "1", "--batch-size", "2", "--quiet", "--threads", "1", "--fsdp"]
    assert main(args) == 0  # one process trains unsharded; the flag reaches TrainConfig
    assert _state(tmp_path / "run")["train_config"]["fsdp"]
    with pytest.raises(VoxlmError, match="codec training has no --fsdp"):
        Trainer(types.SimpleNamespace(name="codec"), config(True), tmp_path, progress=False)
