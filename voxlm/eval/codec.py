"""Codec evaluation (Codec-SUPERB style): every metric of `metrics.py` for every file and system.

    from voxlm.eval.baselines import baseline_codecs
    systems = {"voxlm-1.1": (1.1, my_round_trip), **baseline_codecs()}
    summary = evaluate_codecs(read_manifest(path), path.parent, systems, "reports/codec")

Writes into out_dir:
  results.jsonl           one line per file and system: every metric (null where not defined),
                          the Whisper transcript and its word errors
  report.md               mean of each metric per system (NaN left out), WER pooled over words,
                          and the time each metric took per second of audio
  quality_vs_bitrate.png  PESQ, STOI and WER against kbps: our systems as a line, baselines as
                          labelled markers, the original's WER as a dashed line

The row "original" is the input itself, judged only where that means something: WER (the judge's
own error on clean audio) and DNSMOS.
"""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..data import write_atomic
from ..errors import VoxlmError
from . import metrics as M

ORIGINAL = "original"
SIGNAL_METRICS = {"mel": M.mel_distance, "stft": M.stft_distance, "si_sdr": M.si_sdr,
                  "pesq": M.pesq_wb, "stoi": M.stoi_score, "f0_corr": M.f0_correlation}
MODEL_METRICS = ("wer", "spk_sim", "dnsmos")
METRICS = tuple(SIGNAL_METRICS) + MODEL_METRICS
# report column: (header, format); arrows say which way is better
COLUMNS = {"mel": ("mel ↓", "{:.3f}"), "stft": ("STFT ↓", "{:.3f}"),
           "si_sdr": ("SI-SDR dB ↑", "{:.1f}"), "pesq": ("PESQ ↑", "{:.2f}"),
           "stoi": ("STOI ↑", "{:.3f}"), "f0_corr": ("F0 corr ↑", "{:.3f}"),
           "wer": ("WER % ↓", "{:.1f}"), "spk_sim": ("spk sim ↑", "{:.3f}"),
           "dnsmos": ("DNSMOS ↑", "{:.2f}")}


def _clock(timings: dict, key: str, t0: float, audio_seconds: float) -> None:
    """Add the time since t0 and the seconds of audio it covered to timings[key]."""
    spent = timings.setdefault(key, [0.0, 0.0])
    spent[0] += time.perf_counter() - t0
    spent[1] += audio_seconds


def _judge(ref, deg, text, system, judges, ref_embedding, timings):
    """Every metric of one decoded signal: {metric: float}, plus transcript and word counts."""
    out = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        value = fn(*args)
        _clock(timings, name, t0, len(ref) / SAMPLE_RATE)
        return value

    original = system == ORIGINAL
    for name, fn in SIGNAL_METRICS.items():
        out[name] = math.nan if original else timed(name, fn, ref, deg)
    hyp, errors, words = timed("wer", judges.word_errors, deg, text)
    out.update(wer=errors / words if words else math.nan, transcript=hyp, wer_errors=errors,
               wer_words=words)
    out["spk_sim"] = math.nan if original else timed("spk_sim", judges.speaker_similarity, ref,
                                                     deg, ref_embedding)
    out["dnsmos"] = timed("dnsmos", judges.dnsmos, deg)["ovrl"]
    return out


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarize(results: list, systems: dict) -> list:
    """Per system: {'system', 'kbps', 'files', metric means (NaN left out), 'wer' pooled}."""
    summary = []
    for name in [ORIGINAL, *systems]:
        rows = [r for r in results if r["system"] == name]
        if not rows:
            continue
        entry = {"system": name, "kbps": math.nan if name == ORIGINAL else float(systems[name][0]),
                 "files": len(rows)}
        for metric in METRICS:
            entry[metric] = _mean(r[metric] for r in rows)
        words = sum(r["wer_words"] for r in rows)
        entry["wer"] = sum(r["wer_errors"] for r in rows) / words if words else math.nan
        summary.append(entry)
    return summary


def _json_value(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return round(v, 6) if isinstance(v, float) else v


def write_report(path, summary: list, timings: dict, seconds: float, n_files: int) -> Path:
    """Markdown table of the summary (WER in percent) and the cost of each step, written
    atomically. timings: {step: [compute seconds, audio seconds]}."""
    head = ["system", "kbps", *(COLUMNS[m][0] for m in METRICS)]
    lines = ["# Codec evaluation\n",
             f"{n_files} files, {seconds:.1f} s of audio at {SAMPLE_RATE} Hz. Means over files "
             "(undefined values left out); WER pooled over all words (Whisper tiny.en, int8). "
             f"'{ORIGINAL}' is the input itself: the judge's own WER and DNSMOS.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summary:
        cells = [entry["system"], "-" if math.isnan(entry["kbps"]) else f"{entry['kbps']:g}"]
        for metric in METRICS:
            value = entry[metric] * (100 if metric == "wer" else 1)
            cells.append("-" if math.isnan(value) else COLUMNS[metric][1].format(value))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Compute seconds per second of audio judged (metrics) or coded (codecs), model "
              "loading included:", "", "| step | s / s audio |", "|---|---|"]
    for key, (spent, audio) in timings.items():
        lines.append(f"| {key} | {spent / max(audio, 1e-9):.4f} |")
    return write_atomic(path, "\n".join(lines) + "\n")


def plot_quality(path, summary: list, baselines) -> Path:
    """PESQ, STOI and WER against kbps: systems not in `baselines` joined by a line, baselines as
    labelled markers."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the backend alone

    coded = [e for e in summary if e["system"] != ORIGINAL]
    original = next((e for e in summary if e["system"] == ORIGINAL), None)
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    for ax, metric, label in zip(axes, ("pesq", "stoi", "wer"), ("PESQ (wb)", "STOI", "WER %")):
        scale = 100 if metric == "wer" else 1
        ours = sorted((e for e in coded if e["system"] not in baselines), key=lambda e: e["kbps"])
        models = list(dict.fromkeys(e["system"].rsplit(" ", 1)[0] for e in ours))  # one line each
        for index, model in enumerate(models):
            line = [e for e in ours if e["system"].rsplit(" ", 1)[0] == model]
            ax.plot([e["kbps"] for e in line], [e[metric] * scale for e in line],
                    "o-" if index == 0 else "o--", color="C0" if index == 0 else f"C{9 - index}",
                    label=model)
            for e in line:
                ax.annotate(e["system"], (e["kbps"], e[metric] * scale), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        for k, e in enumerate(e for e in coded if e["system"] in baselines):
            ax.plot(e["kbps"], e[metric] * scale, "s", color=f"C{k + 1}", label=e["system"])
            ax.annotate(e["system"], (e["kbps"], e[metric] * scale), fontsize=7,
                        xytext=(3, -9), textcoords="offset points")
        if metric == "wer" and original is not None and not math.isnan(original["wer"]):
            ax.axhline(original["wer"] * 100, color="gray", ls="--", lw=1, label="original")
        ax.set_xscale("log")
        ax.set_xlabel("kbps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("Codec quality against bitrate")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return write_atomic(path, buf.getvalue())


def evaluate_codecs(rows, root, systems: dict, out_dir, progress: bool = True,
                    limit: int | None = None, judges: M.Judges | None = None) -> list:
    """Run every system on every manifest row and judge it.

    rows: manifest rows (voxlm.data.read_manifest), audio paths relative to `root`.
    systems: {name: (kbps, fn)}, fn: [N] float32 16 kHz -> [N] float32 16 kHz.
    judges: reuse loaded models (a new Judges() when None).
    Returns the summary, one dict per system ('original' first): system, kbps, files and the
    mean of every metric (WER pooled over words).
    """
    from tqdm import tqdm

    from .baselines import BASELINES

    rows = list(rows)[:limit] if limit is not None else list(rows)
    if not rows:
        raise VoxlmError("no files to evaluate; pass a manifest with at least one row")
    if not systems or ORIGINAL in systems:
        raise VoxlmError(f"systems must name at least one codec and not '{ORIGINAL}' "
                         "(that row is added by evaluate_codecs)")
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judges = judges or M.Judges()
    results, timings, seconds = [], {}, 0.0
    bar = tqdm(total=len(rows) * (len(systems) + 1), desc="codec eval", disable=not progress,
               unit="run")
    for row in rows:
        ref = load_audio(root / row["audio"])  # [N]
        seconds += len(ref) / SAMPLE_RATE
        t0 = time.perf_counter()
        ref_embedding = judges.speaker_embedding(ref)  # [256] or None, shared by all systems
        _clock(timings, "spk_sim", t0, 0.0)  # counted against the systems it serves
        for name in [ORIGINAL, *systems]:
            if name == ORIGINAL:
                deg = ref
            else:
                t0 = time.perf_counter()
                deg = np.asarray(systems[name][1](ref), dtype=np.float32)
                _clock(timings, f"codec {name}", t0, len(ref) / SAMPLE_RATE)
                if deg.shape != ref.shape:
                    raise VoxlmError(f"system '{name}' returned {list(deg.shape)} samples for "
                                     f"{row['id']} of {list(ref.shape)}; it must keep the length")
            scores = _judge(ref, deg, row["text"], name, judges, ref_embedding, timings)
            kbps = math.nan if name == ORIGINAL else float(systems[name][0])
            results.append({"id": row["id"], "system": name, "kbps": kbps,
                            "duration": round(len(ref) / SAMPLE_RATE, 3), **scores})
            bar.update(1)
    bar.close()

    lines = [json.dumps({k: _json_value(v) for k, v in r.items()}, ensure_ascii=False)
             for r in results]
    write_atomic(out_dir / "results.jsonl", "\n".join(lines) + "\n")
    summary = summarize(results, systems)
    write_report(out_dir / "report.md", summary, timings, seconds, len(rows))
    plot_quality(out_dir / "quality_vs_bitrate.png", summary, set(BASELINES))
    return summary
