"""`voxlm eval codec`: our codec at each bitrate beside the baseline codecs on the same files,
per evaluation set, plus codebook usage and the semantic-codebook probe.

    REPORT/<set>/report.md, results.jsonl, quality_vs_bitrate.png   (eval/codec.py)
    REPORT/codebooks.md   perplexity per codebook over the first set; the codebook probe
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..data import read_manifest, write_atomic
from ..errors import VoxlmError

DEFAULT_KBPS = (0.5, 1.0, 1.5)


def codec_systems(codec, bitrates=DEFAULT_KBPS, streaming: bool = False) -> dict:
    from ..codec.files import roundtrip_audio

    systems = {}
    for kbps in bitrates:
        n_q = codec.config.n_q_for_kbps(kbps)
        actual = codec.config.kbps(n_q)
        systems[f"voxlm {actual:g}k"] = (actual, lambda audio, n_q=n_q: roundtrip_audio(
            codec, audio, n_q, streaming))
    return systems


def eval_rows(folder: Path, limit: int | None, splits=("test", "valid")) -> list:
    manifest = Path(folder) / "manifest.jsonl"
    if not manifest.exists():
        raise VoxlmError(f"no manifest.jsonl in {folder}",
                         "pass a corpus folder (voxlm synth corpus / voxlm synth realset)")
    rows = [r for r in read_manifest(manifest) if r["split"] in splits]
    if not rows:
        raise VoxlmError(f"{manifest} has no held-out rows (split test or valid)",
                         "evaluate on held-out voices: voxlm synth corpus --engines festival")
    rng = np.random.default_rng(0)  # a fixed spread over speakers rather than the first N
    order = rng.permutation(len(rows))
    return [rows[i] for i in order[:limit]] if limit else rows


def codebook_usage(codec, folder: Path, rows: list) -> list:
    """Perplexity of each codebook's codes over the files (max = codebook size)."""
    from ..codec.files import encode_audio
    from ..codec.quantize import perplexity

    codes = [torch.from_numpy(encode_audio(codec, load_audio(folder / r["audio"]))) for r in rows]
    codes = torch.cat(codes, dim=-1)[None]  # [1, K, total frames]
    return [float(p) for p in perplexity(codes, codec.config.codebook_size)]


def run_codec_eval(data_dirs, report, checkpoint=None, bitrates=DEFAULT_KBPS, limit: int = 30,
                   probe_data=None, baselines: bool = True, progress: bool = True) -> Path:
    from ..codec.model import load_codec
    from .baselines import baseline_codecs
    from .codec import evaluate_codecs
    from .metrics import Judges

    codec = load_codec(checkpoint)
    report = Path(report)
    systems = codec_systems(codec, bitrates)
    if baselines:
        systems.update(baseline_codecs())
    judges = Judges()
    lines = ["# Codec evaluation", ""]
    for folder in map(Path, data_dirs):
        rows = eval_rows(folder, limit)
        summary = evaluate_codecs(rows, folder, systems, report / folder.name, progress=progress,
                                  judges=judges)
        lines += [f"## {folder.name}: {len(rows)} files", "",
                  (report / folder.name / "report.md").read_text().split("\n", 2)[2], ""]
    first = Path(data_dirs[0])
    usage = codebook_usage(codec, first, eval_rows(first, limit))
    lines += ["## Codebook usage", "", f"Perplexity of each codebook over {first.name} "
              f"(of {codec.config.codebook_size}):", "",
              "| codebook | " + " | ".join(str(i + 1) for i in range(len(usage))) + " |",
              "|---|" + "---|" * len(usage),
              "| perplexity | " + " | ".join(f"{p:.0f}" for p in usage) + " |", ""]
    if probe_data:
        from .probe import codebook_probe

        probe_rows = read_manifest(Path(probe_data) / "manifest.jsonl")
        train = [r for r in probe_rows if r["split"] == "train"][:400]
        held = [r for r in probe_rows if r["split"] != "train"][:200]
        results = codebook_probe(codec, probe_data, train + held, progress=progress)
        lines += ["## Semantic codebook probe", "",
                  "Word identity from bags of one codebook's codes (first/middle/last third of "
                  "each word), logistic regression trained on training speakers, tested on "
                  "held-out speakers:", "", "| codebook | accuracy | chance | words | tokens train/test |",
                  "|---|---|---|---|---|"]
        for r in results:
            lines.append(f"| {r.codebook} | {r.accuracy:.3f} | {r.chance:.3f} | {r.words} | "
                         f"{r.train_tokens}/{r.test_tokens} |")
    write_atomic(report / "report.md", "\n".join(lines) + "\n")
    return report / "report.md"
