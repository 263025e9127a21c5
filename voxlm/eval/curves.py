"""Training curves from a run's metrics.jsonl, as a PNG (matplotlib, Agg)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..data import write_atomic
from ..errors import VoxlmError


def read_curve(path) -> list:
    path = Path(path)
    if not path.exists():
        raise VoxlmError(f"no training curve at {path}", "pass a run folder written by `train`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values, window: int):
    values = np.asarray(values, dtype=float)
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(np.pad(values, (window - 1, 0), mode="edge"), kernel, mode="valid")


def plot_curve(metrics_path, out_png, keys=None, title: str = "training curve") -> Path:
    """One panel per metric against step (raw, faint; smoothed, solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curve(metrics_path)
    keys = keys or [k for k in rows[-1] if k not in ("step", "lr", "n_q", "seconds_per_step")
                    and not k.startswith("grad_norm")]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if not points:
            continue
        steps, values = map(np.array, zip(*points))
        ax.plot(steps, values, alpha=0.25, color="tab:blue")
        ax.plot(steps, smooth(values, 10), color="tab:blue")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_atomic(Path(out_png), buffer.getvalue())
