"""A benchmark peer in its own process: its own Python (and so its own packages), one torch
thread, and the JSON object it prints last read back. codec_speed.py and lm_step_latency.py
time voxlm in this Python and moshi's models in BENCH_PYTHON this way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_PYTHON = "/work/benchvenv/bin/python"  # plain venv: torch cpu + `pip install --no-deps moshi`
REPO = Path(__file__).resolve().parents[1]


def run_peer(peer: str, script: str, args: list, python: str | None = None,
             env: dict | None = None) -> dict:
    """Run `python script args` (default: this Python) with one torch thread; -> the last JSON
    object it printed, or {"peer", "skipped": why} when the Python is missing or the run fails."""
    python = python or sys.executable
    if not Path(python).exists():
        return {"peer": peer, "skipped": f"{python} not found; see the script's docstring"}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run([python, script, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peer": peer, "skipped": f"failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])
