"""Manifests (JSONL, one utterance or dialogue per line) and atomic file writes.

Manifest row (DESIGN.md 4): {"id", "audio", "duration", "text", "words": [{"w", "start", "end"}],
"speaker", "engine", "split"}; dialogues add "turns": [{"channel", "start", "end", "text",
"words"}]. "audio" is relative to the manifest's folder.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .errors import VoxlmError

REQUIRED = {"id": str, "audio": str, "duration": (int, float), "text": str, "words": list,
            "speaker": str, "engine": str, "split": str}
SPLITS = ("train", "valid", "test")
WRITE_AS = {str: "a string in quotes", list: "a JSON list, [] if empty",
            (int, float): "a number without quotes, e.g. 2.5"}


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give (mkstemp's own is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path, data: bytes | str) -> Path:
    """Write a file so that readers see the old content or the new, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(folder) -> int:
    """Delete temp files that write_atomic/save_audio left when a process was killed mid-write;
    returns how many. Call before resuming a job in `folder`."""
    stale = list(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_json(path, obj) -> Path:
    return write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def strict_json(value):
    """NaN -> None, numpy scalars -> Python, recursively: what strict JSON readers accept."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_manifest(path, rows) -> Path:
    """Write rows as JSONL atomically."""
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _seconds(value) -> bool:
    """True for a finite number >= 0 (not a bool)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


def check_row(row, where: str, root: Path | None = None) -> dict:
    """Validate one manifest row; raise VoxlmError naming the line and the problem."""
    if not isinstance(row, dict):
        raise VoxlmError(f"{where}: expected a JSON object, got {type(row).__name__}; "
                         "each line must be one utterance object")
    for key, kind in REQUIRED.items():
        if key not in row:
            raise VoxlmError(f"{where}: missing field '{key}'; every row needs "
                             f"{', '.join(REQUIRED)}")
        if not isinstance(row[key], kind) or isinstance(row[key], bool):
            raise VoxlmError(f"{where}: field '{key}' should be {getattr(kind, '__name__', 'a number')},"
                             f" got {type(row[key]).__name__}; write it as {WRITE_AS[kind]}")
    if row["split"] not in SPLITS:
        raise VoxlmError(f"{where}: split '{row['split']}' is not one of {', '.join(SPLITS)}; "
                         "use one of those")
    if not row["id"]:
        raise VoxlmError(f"{where}: field 'id' is empty; give every row its own id")
    if not _seconds(row["duration"]):
        raise VoxlmError(f"{where}: duration {str(row['duration'])[:20]} is not a length in seconds; "
                         "it should be a finite number >= 0")
    for k, w in enumerate(row["words"]):
        if not (isinstance(w, dict) and isinstance(w.get("w"), str)
                and _seconds(w.get("start")) and _seconds(w.get("end"))):
            raise VoxlmError(f"{where}: words[{k}] is not {{\"w\": str, \"start\": s, \"end\": s}}; "
                             "give each word its text and its times in seconds >= 0")
    if root is not None:
        try:
            audio = (root / row["audio"]).resolve()
        except (ValueError, OSError):  # a NUL byte, a lone surrogate, a symlink loop
            audio = None
        if audio is None or not row["audio"].strip() or audio == root.resolve():
            raise VoxlmError(f"{where}: audio path {row['audio']!r} does not name a file; "
                             "use a path relative to the manifest, e.g. audio/0001.wav")
        if Path(row["audio"]).is_absolute() or not audio.is_relative_to(root.resolve()):
            raise VoxlmError(f"{where}: audio path '{row['audio']}' points outside the corpus "
                             f"folder {root}; use a path relative to the manifest")
    return row


def read_manifest(path) -> list:
    """Read and validate a manifest JSONL; errors name the file, the line and the fix."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise VoxlmError(f"{path}: no such manifest; create one with `voxlm synth corpus --out DIR`")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VoxlmError(f"{path}:{n}: not valid JSON ({exc.msg}); "
                                 "each line must be one JSON object") from None
            except RecursionError:
                raise VoxlmError(f"{path}:{n}: JSON nested too deeply; "
                                 "each line must be one flat utterance object") from None
            rows.append(check_row(row, f"{path}:{n}", path.parent))
    if not rows:
        raise VoxlmError(f"{path}: manifest is empty; generate data with `voxlm synth corpus`")
    return rows
