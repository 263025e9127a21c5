"""The one training loop, for the codec and the language model: one process or `torchrun`.

    torchrun --nproc_per_node 2 -m voxlm codec train --data DIR --out RUN   # DDP over gloo on CPU
    voxlm codec train --data DIR --out RUN                                  # one process
    torchrun --nproc_per_node 8 -m voxlm lm train --data DIR --out RUN --fsdp   # FSDP2 (LM)

A task (codec or LM) supplies modules, optimizers and `train_step(microbatches, step)`; this
file does the rest: process group (gloo on CPU, nccl on GPU), DDP wrapping, the cosine schedule,
gradient accumulation (the task's microbatches), atomic checkpoints every N steps that resume
exactly (model, optimizer, RNG and step; batches are a pure function of the step), TensorBoard
scalars and a metrics.jsonl curve on rank 0, and a progress bar.

With `fsdp` (a task with a `shard` method: the LM) and more than one process, the model is
sharded with FSDP2 instead of DDP (`sharding.py`): each process holds 1/world of the weights,
gradients and optimizer state, for models whose training state does not fit one device. The
global batch, the loss and so the curve are the same as with DDP or one process; checkpoints
are the same single file, so a run resumes with or without `--fsdp`. In one process `fsdp`
changes nothing.

A task with `valid_every` (the LM's `--valid-every N`) is validated every N steps and at the
last (`task.validate()`, on every process, process 0's numbers broadcast): its row goes into
metrics.jsonl and TensorBoard, and a lower valid_loss than any before exports the model to
RUN/best.safetensors. The best step and loss live in train_state.pt, so a resumed run
compares against the same best; validation comes before the step's checkpoint.

RUN/train_state.pt   everything needed to resume          (atomic)
RUN/model.safetensors the weights for inference           (atomic, task.export)
RUN/metrics.jsonl     one JSON row per logged step        (the training curve)
RUN/best.safetensors  the weights of the best validation  (atomic, task.export; --valid-every)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import load_torch, save_torch_atomic
from .data import remove_stale_temps, write_atomic
from .errors import VoxlmError


@dataclass
class TrainConfig:
    """The loop's settings. Learning rates belong to the task (its optimizers' base rates);
    the loop scales them all by lr_factor (warm-up, then cosine decay)."""
    steps: int = 1000
    stop_at: int = 0  # end (saved, validated) at this step; the schedule still spans `steps`
    warmup: int = 100  # linear warm-up steps
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    save_every: int = 200
    log_every: int = 10
    seed: int = 0
    threads: int = 0  # torch intra-op threads per process; 0 leaves torch's default
    bf16: bool = False  # autocast to bfloat16 (on by default on GPU)
    fsdp: bool = False  # under torchrun: shard the model with FSDP2 instead of DDP (LM only)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Read torchrun's environment; start the process group when there is more than one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local, device)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to min_lr_ratio."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def no_sync(module, sync: bool):
    """DDP's no_sync when this microbatch is not the last one; a null context otherwise. A
    module sharded with FSDP2 reduce-scatters its gradients only when `sync` (the last one)."""
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    return config.bf16 or device.type == "cuda"


def unwrap(module):
    return getattr(module, "module", module)


class Trainer:
    """Runs `task` for `config.steps` steps, writing into `out`."""

    def __init__(self, task, config: TrainConfig, out, progress: bool = True):
        self.task, self.config, self.out = task, config, Path(out)
        self.progress = progress
        for flag, value, least in (("--steps", config.steps, 1), ("--save-every", config.save_every, 1),
                                   ("--log-every", config.log_every, 1), ("--threads", config.threads, 0)):
            if value < least:
                raise VoxlmError(f"{flag} is {value}", f"pass a whole number of at least {least}")
        if not 0 <= config.stop_at <= config.steps:
            raise VoxlmError(f"--stop-at {config.stop_at} is outside the {config.steps}-step schedule",
                             f"pass a step from 1 to --steps ({config.steps}), or 0 to run it all")
        if config.fsdp and not hasattr(task, "shard"):
            raise VoxlmError(f"{task.name} training has no --fsdp", "drop --fsdp: it trains with DDP")
        self.dist = setup_distributed()
        self.sharded = config.fsdp and self.dist.world > 1  # FSDP2 instead of DDP
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        task.setup(self.dist, config)
        self.base_lrs = {name: [group["lr"] for group in opt.param_groups]
                         for name, opt in task.optimizers.items()}
        self.step = 0
        self.best_step, self.best_valid_loss = None, None  # the lowest valid_loss so far
        self.writer = None

    # ---- checkpoints ----
    @property
    def state_path(self) -> Path:
        return self.out / "train_state.pt"

    def save(self):
        if self.sharded:  # every process sends its shards; process 0 gets the full state
            from .sharding import full_state

            modules, optimizers = {}, {}
            for name, module in self.task.modules.items():
                modules[name], optimizers[name] = full_state(module, self.task.optimizers[name])
        if self.dist.main:
            if not self.sharded:
                modules = {n: unwrap(m).state_dict() for n, m in self.task.modules.items()}
                optimizers = {n: o.state_dict() for n, o in self.task.optimizers.items()}
            state = {"step": self.step, "rng": rng_state(), "train_config": asdict(self.config),
                     "modules": modules, "optimizers": optimizers, "task": self.task.state(),
                     "best_step": self.best_step, "best_valid_loss": self.best_valid_loss}
            save_torch_atomic(self.state_path, state)
            if self.sharded:
                self.task.export(self.out, modules)
            else:
                self.task.export(self.out)
        if self.dist.world > 1:
            dist.barrier()

    def resume(self) -> bool:
        """Continue from train_state.pt if there is one; either way drop what a killed run left
        after its last checkpoint (temp files, curve rows)."""
        if self.dist.main:
            remove_stale_temps(self.out)
        if not self.state_path.exists():
            self._trim_metrics()
            return False
        state = load_torch(self.state_path)
        if not isinstance(state, dict) or not {"step", "rng", "modules", "optimizers"} <= set(state):
            raise VoxlmError(f"{self.state_path} is not a voxlm training state",
                             "pass a new --out folder, or delete the file to restart from step 0")
        self.task.load_state(state.get("task", {}))  # first: it names a config mismatch
        if self.sharded:  # each process reads the whole state and keeps its shards
            from .sharding import load_full_state

            for name, module in self.task.modules.items():
                load_full_state(module, self.task.optimizers[name], state["modules"][name],
                                state["optimizers"][name])
        else:
            for name, module in self.task.modules.items():
                unwrap(module).load_state_dict(state["modules"][name])
            for name, optimizer in self.task.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.best_step, self.best_valid_loss = state.get("best_step"), state.get("best_valid_loss")
        self._trim_metrics()
        return True

    def _trim_metrics(self):
        """Drop curve rows logged after the checkpoint we resume from (and a line cut short)."""
        path = self.out / "metrics.jsonl"
        if self.dist.main and path.exists():
            rows = []
            for line in path.read_text(errors="replace").splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        rows.append(line)
                except (ValueError, TypeError, KeyError):
                    continue
            write_atomic(path, "".join(row + "\n" for row in rows))

    def validate(self):
        """The task's held-out losses at this step, logged; a new best exported."""
        with self.autocast():
            metrics = self.task.validate()
        if self.dist.world > 1:  # one verdict on every process: the export below gathers
            values = torch.tensor(list(metrics.values()), dtype=torch.float64,
                                  device=self.dist.device)
            dist.broadcast(values, 0)
            metrics = dict(zip(metrics, values.tolist()))
        self.log(metrics)
        loss = metrics["valid_loss"]
        if math.isfinite(loss) and (self.best_valid_loss is None or loss < self.best_valid_loss):
            self.best_step, self.best_valid_loss = self.step, loss
            if self.sharded:
                from .sharding import full_weights

                weights = {n: full_weights(m) for n, m in self.task.modules.items()}
                if self.dist.main:
                    self.task.export(self.out, weights, name="best.safetensors")
            elif self.dist.main:
                self.task.export(self.out, name="best.safetensors")
            if self.dist.world > 1:
                dist.barrier()

    # ---- logging ----
    def log(self, metrics: dict, elapsed: float | None = None):
        """One metrics.jsonl row (and TensorBoard scalars) on process 0; `elapsed`: seconds
        per step since the last row (None: a row without timing, e.g. validation)."""
        if not self.dist.main:
            return
        row = {"step": self.step, **{k: round(float(v), 6) for k, v in metrics.items()}}
        if elapsed is not None:
            row["seconds_per_step"] = round(elapsed, 4)
        with open(self.out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.writer = False
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, self.step)
            self.writer.flush()

    # ---- the loop ----
    def autocast(self):
        if not uses_bf16(self.config, self.dist.device):
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)

    def run(self, stop_at: int | None = None) -> int:
        """Train to config.steps; `stop_at` ends the loop early without a final save, as a
        kill would (tests use it)."""
        from tqdm import tqdm

        if self.sharded:  # the optimizer is built on the shards, before resume loads it
            self.task.shard(self.dist, uses_bf16(self.config, self.dist.device))
            resumed = self.resume()
        else:
            resumed = self.resume()
            self.task.wrap(self.dist)
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not (self.progress and self.dist.main),
                   desc=f"{self.task.name} train" + (" (resumed)" if resumed else ""), unit="step")
        last_log, window = time.time(), 0
        end = self.config.stop_at or self.config.steps  # --stop-at: an early end, saved
        while self.step < end:
            if stop_at is not None and self.step >= stop_at:
                break
            factor = lr_factor(self.step, self.config)
            for name, optimizer in self.task.optimizers.items():
                for group, base in zip(optimizer.param_groups, self.base_lrs[name]):
                    group["lr"] = base * factor
            microbatches = self.task.batch(self.step, self.dist)
            with self.autocast():
                metrics = self.task.train_step(microbatches, self.step)
            self.step += 1
            window += 1
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == end:
                now = time.time()
                metrics = {**metrics, "lr": factor}  # the schedule's factor on every base rate
                self.log(metrics, (now - last_log) / window)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(metrics.items())[:4]})
                last_log, window = now, 0
            every = getattr(self.task, "valid_every", 0)
            if every and (self.step % every == 0 or self.step == end):
                self.validate()
            if self.step % self.config.save_every == 0 or self.step == end:
                self.save()
        bar.close()
        self.task.unwrap()
        if self.writer:
            self.writer.close()
        return self.step
