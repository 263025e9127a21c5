"""Model files: safetensors weights with the config, a format version and a checksum inside.

    save_model(path, kind="codec", config=dataclass, state_dict=..., dtype=torch.float16)
    tensors, config = load_model(path, kind="codec")

The checksum (sha256 over names, shapes and bytes of every tensor) is stored in the header, so
a truncated or altered file is caught with a clear error instead of a shape error later; a second
one covers the header's kind, version, config and extra (files without it still load).
Training states (`save_torch_atomic`) end in a sha256 of the torch file before it, checked on load.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from .data import file_mode, write_atomic
from .errors import VoxlmError

FORMAT_VERSION = 1


def tensor_digest(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def header_digest(metadata: dict) -> str:
    text = json.dumps([metadata.get(k) for k in ("kind", "format_version", "config", "extra")])
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(temp)


INT8_SUFFIX, SCALE_SUFFIX = ".int8", ".int8_scale"
INT8_MIN_SIZE = 4096  # smaller tensors (biases, norms) stay in float


def quantize_int8(tensor: torch.Tensor) -> tuple:
    """Symmetric int8 per output row: -> (int8 tensor, fp16 scale [rows, 1, ...])."""
    rows = tensor.float().reshape(tensor.shape[0], -1)
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
    q = torch.round(rows / scale).clamp(-127, 127).to(torch.int8).reshape(tensor.shape)
    return q, scale.half()


INT4_SUFFIX, INT4_SCALE_SUFFIX = ".int4", ".int4_scale"
INT4_GROUP = 32  # weights sharing one scale, along the last dimension


def quantize_int4(tensor: torch.Tensor) -> tuple:
    """Symmetric int4 in groups of INT4_GROUP along the last dimension (which it must divide),
    two weights per byte: [..., n] -> (uint8 [..., n / 2], fp16 scale [..., n / INT4_GROUP])."""
    *lead, n = tensor.shape
    groups = tensor.float().reshape(*lead, n // INT4_GROUP, INT4_GROUP)
    scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 7.0
    q = (torch.round(groups / scale).clamp(-8, 7) + 8).to(torch.uint8).reshape(*lead, n)
    return q[..., 0::2] | (q[..., 1::2] << 4), scale.squeeze(-1).half()


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float tensor [..., n] of `quantize_int4`'s (packed [..., n / 2], scale)."""
    q = torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2).float() - 8  # [..., n]
    groups = q.reshape(*q.shape[:-1], -1, INT4_GROUP) * scale.float()[..., None]
    return groups.reshape(q.shape)


def dequantize(tensors: dict) -> dict:
    """Replace every name.int8 / name.int8_scale pair (and name.int4 / name.int4_scale) by the
    float tensor `name`."""
    out = {}
    for name, tensor in tensors.items():
        if name.endswith(SCALE_SUFFIX) or name.endswith(INT4_SCALE_SUFFIX):
            continue
        if name.endswith(INT4_SUFFIX):
            base = name[: -len(INT4_SUFFIX)]
            out[base] = dequantize_int4(tensor, tensors[base + INT4_SCALE_SUFFIX])
        elif name.endswith(INT8_SUFFIX):
            base = name[: -len(INT8_SUFFIX)]
            scale = tensors[base + SCALE_SUFFIX].float()
            out[base] = (tensor.float().reshape(tensor.shape[0], -1) * scale).reshape(tensor.shape)
        else:
            out[name] = tensor
    return out


def save_model(path, kind: str, config, state_dict: dict, dtype: torch.dtype | None = None,
               extra: dict | None = None, int8: bool = False, int4: bool = False,
               keep_int8: tuple = ()) -> Path:
    """Write weights atomically. Float tensors are cast to `dtype` when given (e.g. fp16);
    with `int8`, weight matrices of INT8_MIN_SIZE or more elements are stored as int8 with a
    per-row scale (4x smaller than fp32) and dequantised on load; with `int4`, those whose last
    dimension INT4_GROUP divides are stored as int4 in groups (7x smaller), the rest as int8,
    and so are those whose names start with one of `keep_int8` (the layers int4 hurts most)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        matrix = tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= INT8_MIN_SIZE
        if int4 and matrix and tensor.shape[-1] % INT4_GROUP == 0 and not name.startswith(keep_int8):
            tensors[name + INT4_SUFFIX], tensors[name + INT4_SCALE_SUFFIX] = quantize_int4(tensor)
            continue
        if (int8 or int4) and matrix:
            tensors[name + INT8_SUFFIX], tensors[name + SCALE_SUFFIX] = quantize_int8(tensor)
            continue
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    metadata = {"kind": kind, "format_version": str(FORMAT_VERSION),
                "config": json.dumps(config_dict), "sha256": tensor_digest(tensors),
                "extra": json.dumps(extra or {})}
    metadata["header_sha256"] = header_digest(metadata)
    temp = _atomic_target(path)
    try:
        save_file(tensors, str(temp), metadata=metadata)
        os.chmod(temp, file_mode())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def load_model(path, kind: str) -> tuple[dict, dict, dict]:
    """-> (tensors, config dict, extra dict); VoxlmError naming the problem on any defect."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise VoxlmError(f"model file not found: {path}",
                         "check the path, or leave it out to use the shipped default")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for bad headers
        raise VoxlmError(f"{path} is not a readable model file ({str(error).splitlines()[0][:80]})",
                         "the file is truncated or corrupt: copy or train it again") from None
    if metadata.get("kind") != kind:
        raise VoxlmError(f"{path} holds a {metadata.get('kind', 'unknown')!r} model, not a {kind!r} one",
                         f"pass a {kind} checkpoint")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise VoxlmError(f"{path} has format version {version}, this voxlm reads {FORMAT_VERSION}",
                         "re-export the checkpoint with this version of voxlm")
    if tensor_digest(tensors) != metadata.get("sha256") or (
            "header_sha256" in metadata and header_digest(metadata) != metadata["header_sha256"]):
        raise VoxlmError(f"{path} failed its checksum", "the file is corrupt: copy or train it again")
    try:
        config, extra = json.loads(metadata.get("config", "")), json.loads(metadata.get("extra", "{}"))
    except json.JSONDecodeError:
        config = extra = None
    if not isinstance(config, dict) or not isinstance(extra, dict):
        raise VoxlmError(f"{path} has an unreadable config in its header",
                         "the file is corrupt: copy or train it again")
    return dequantize(tensors), config, extra


def load_into(module: torch.nn.Module, tensors: dict, path, optional=()) -> torch.nn.Module:
    """Load `tensors` into `module`, naming any tensor whose shape differs from what the config
    built, and any the file lacks (except names ending in one of `optional`)."""
    state = module.state_dict()
    for name, tensor in tensors.items():
        if name not in state or state[name].shape != tensor.shape:
            raise VoxlmError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the config "
                             f"expects {tuple(state[name].shape) if name in state else 'none'}",
                             "the file does not match its config: export it again")
        state[name] = tensor.to(state[name].dtype)
    missing = [n for n in state if n not in tensors and not (optional and n.endswith(tuple(optional)))]
    if missing:
        raise VoxlmError(f"{path} lacks {len(missing)} tensors (e.g. {missing[0]})",
                         "the file is incomplete: export it again")
    module.load_state_dict(state)
    return module


STATE_TRAILER = b"voxlm-sha256"  # then 32 bytes: sha256 of the torch file before the trailer


def save_torch_atomic(path, obj) -> Path:
    """torch.save `obj` atomically, followed by STATE_TRAILER and the sha256 of what it follows
    (torch.load still reads the file: zip archives are found from their end)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    return write_atomic(path, b"".join([data, STATE_TRAILER, hashlib.sha256(data).digest()]))


def load_torch(path):
    """Load a file from save_torch_atomic, checking its sha256 (files written before the
    checksum existed have no trailer: they must at least end where a zip archive ends)."""
    path = Path(path)
    fix = "it is truncated or corrupt: restore a copy, or delete it to restart from step 0"
    data = memoryview(path.read_bytes())
    end = len(data) - 32 - len(STATE_TRAILER)
    if end >= 0 and data[end: end + len(STATE_TRAILER)] == STATE_TRAILER:
        if hashlib.sha256(data[:end]).digest() != data[-32:]:
            raise VoxlmError(f"{path} failed its checksum", fix)
        data = data[:end]
    elif data[-22:-18] != b"PK\x05\x06":  # the zip end record torch.save writes last
        raise VoxlmError(f"{path} is not a readable training state (it does not end as one)", fix)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as error:
        raise VoxlmError(f"{path} is not a readable training state ({type(error).__name__})",
                         fix) from None
