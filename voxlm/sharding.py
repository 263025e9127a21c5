"""FSDP2 for the shared training loop (`train.py`, `--fsdp`): models too large for one device.

    torchrun --nproc_per_node 8 -m voxlm lm train --data DIR --out RUN --config base --fsdp

`torch.distributed.fsdp.fully_shard` splits every parameter over the processes (each keeps
1/world of the weights, gradients and AdamW moments as DTensor shards); each transformer block
is its own unit, gathered just before it runs and freed after, and the root holds the rest
(embeddings, heads). With bf16 (always on GPU) the gathered weights are bf16 and gradients
are reduced in fp32 into fp32 shards. The optimizer is built after sharding, on the shards.

Checkpoints stay one file per run, the same as one process or DDP writes: the shards are
gathered into full CPU state dicts for process 0 to write (`full_state`), and on resume every
process reads the file and keeps its own shards (`load_full_state`). The optimizer state is
stored with the integer parameter ids of `Optimizer.state_dict`, so a run saved with `--fsdp`
resumes without it, and the other way round.

Limits: each process builds the whole model in host memory before sharding (so seeded
initial weights equal one process's); sharding then moves one block at a time onto the device.
Resuming reads the whole checkpoint into each process's host memory once.
"""
from __future__ import annotations

import torch


def shard(module: torch.nn.Module, blocks, device: torch.device, bf16: bool) -> torch.nn.Module:
    """fully_shard each of `blocks` (submodules of `module`), then `module` itself, over all
    processes of the default group on `device`'s type. -> the same module, now sharded."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    return fully_shard(module, mesh=mesh, mp_policy=policy)


def full_state(module, optimizer) -> tuple[dict, dict]:
    """The full (unsharded) state dicts of a sharded module and its optimizer, on the CPU of
    process 0 as `module.state_dict()` and `optimizer.state_dict()` give them unsharded;
    {} on the other processes. Every process must call it (it gathers the shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, optim = get_state_dict(module, optimizer, options=options)
    return weights, (_by_ids(optim) if optim else {})


def full_weights(module) -> dict:
    """The full state dict of a sharded module alone, on the CPU of process 0 ({} on the
    others). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))


def load_full_state(module, optimizer, weights: dict, optim: dict):
    """Load full state dicts (as `full_state` returns, or as an unsharded run saved them) into
    a sharded module and its optimizer. Every process calls it with the whole dicts and keeps
    its own shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # broadcast_from_rank0 would spare the other processes the read, but set_state_dict takes
    # their empty model dict for "optimizer only" and skips the model's broadcast, so the
    # collectives mismatch; set_model_state_dict and set_optimizer_state_dict apart work
    # (tried on torch 2.13, gloo)
    options = StateDictOptions(full_state_dict=True)
    set_state_dict(module, optimizer, model_state_dict=weights,
                   optim_state_dict=_by_names(optim, module, optimizer), options=options)


def _by_ids(optim: dict) -> dict:
    """Optimizer state keyed by parameter name (torch.distributed.checkpoint's) -> keyed by
    the integer ids `Optimizer.state_dict` uses: groups in order, parameters numbered on."""
    ids, groups = {}, []
    for group in optim["param_groups"]:
        numbers = list(range(len(ids), len(ids) + len(group["params"])))
        ids.update(zip(group["params"], numbers))
        groups.append({**group, "params": numbers})
    return {"state": {ids[name]: value for name, value in optim["state"].items()},
            "param_groups": groups}


def _by_names(optim: dict, module, optimizer) -> dict:
    """The inverse of `_by_ids`, with the names of `optimizer`'s parameters in `module`."""
    names = {id(p): name for name, p in module.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    if len(order) != sum(len(group["params"]) for group in optim["param_groups"]):
        raise ValueError("the saved optimizer state has another number of parameters")
    groups = [{**group, "params": [order[i] for i in group["params"]]}
              for group in optim["param_groups"]]
    return {"state": {order[i]: value for i, value in optim["state"].items()},
            "param_groups": groups}
