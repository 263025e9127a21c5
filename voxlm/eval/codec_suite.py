"""`voxlm eval codec`: our codec at each bitrate beside the baseline codecs on the same files,
per evaluation set, plus codebook usage and the semantic-codebook probe.

    REPORT/<set>/report.md, results.jsonl, quality_vs_bitrate.png   (eval/codec.py)
    REPORT/codebooks.md   perplexity per codebook over the first set; the codebook probe
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..data import read_manifest, write_atomic
from ..errors import VoxlmError

DEFAULT_KBPS = (0.5, 1.0, 1.5)


def codec_systems(codec, bitrates=DEFAULT_KBPS, streaming: bool = False,
                  label: str = "voxlm", pitch_bitrates=()) -> dict:
    """{name: (kbps, fn)}; `pitch_bitrates`: budgets at which the codec sends the input's
    pitch beside its codes too (rows `LABEL+pitch Xk`; a decoder without pitch input skips them)."""
    from ..codec.files import n_q_for, roundtrip_audio, total_kbps

    systems = {}
    for kbps in bitrates:
        n_q = codec.config.n_q_for_kbps(kbps)
        actual = codec.config.kbps(n_q)
        systems[f"{label} {actual:g}k"] = (actual, lambda audio, n_q=n_q: roundtrip_audio(
            codec, audio, n_q, streaming))
    for kbps in pitch_bitrates if codec.has_pitch_input else ():
        n_q = n_q_for(codec, kbps, pitch=True)
        actual = total_kbps(codec, n_q, pitch=True)
        systems[f"{label}+pitch {actual:g}k"] = (actual, lambda audio, n_q=n_q: roundtrip_audio(
            codec, audio, n_q, streaming, pitch=True))
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


def compare_label(path) -> str:
    """`voxlm[NAME]`: NAME the run folder's name, or the model file's name without suffix."""
    path = Path(path)
    name = path.name if path.is_dir() else path.stem
    if name == "model" and not path.is_dir():
        name = path.parent.name
    return f"voxlm[{name}]"


def run_codec_eval(data_dirs, report, checkpoint=None, bitrates=DEFAULT_KBPS, limit: int = 30,
                   probe_data=None, baselines: bool = True, progress: bool = True,
                   compare=(), pitch_bitrates=()) -> Path:
    """`compare`: more codec files or run folders, each scored on the same files in the same
    run, in rows labelled by `compare_label`. `pitch_bitrates`: see `codec_systems`."""
    from ..codec.model import load_codec
    from .baselines import baseline_codecs
    from .codec import evaluate_codecs
    from .metrics import Judges

    codec = load_codec(checkpoint)
    report = Path(report)
    systems = codec_systems(codec, bitrates, pitch_bitrates=pitch_bitrates)
    for path in compare:
        label = compare_label(path)
        if any(name.startswith(label + " ") for name in systems):
            raise VoxlmError(f"two --compare codecs are both named {label}",
                             "copy one of the files under another name")
        systems.update(codec_systems(load_codec(path), bitrates, label=label))
    if baselines:
        systems.update(baseline_codecs())
    judges = Judges()
    lines = ["# Codec evaluation", ""]
    for folder in map(Path, data_dirs):
        rows = eval_rows(folder, limit)
        evaluate_codecs(rows, folder, systems, report / folder.name, progress=progress,
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
        lines += probe_report(codec, Path(probe_data), progress)
    write_atomic(report / "report.md", "\n".join(lines) + "\n")
    return report / "report.md"


def probe_report(codec, corpus: Path, progress: bool = True, train_items: int = 400,
                 held_items: int = 200, units_k: int = 50) -> list:
    """Markdown lines: the word probe and the unit probe for codebooks 1, 2 and 3."""
    from .probe import codebook_probe, encode_rows, unit_probe
    from ..units import fit_units_for_corpus

    rows = read_manifest(corpus / "manifest.jsonl")
    rows = ([r for r in rows if r["split"] == "train"][:train_items]
            + [r for r in rows if r["split"] != "train"][:held_items])
    codes = encode_rows(codec, corpus, rows, progress)
    words = codebook_probe(codec, corpus, rows, codebooks=(1, 2, 3), all_codes=codes)
    units = fit_units_for_corpus(corpus, corpus / f"probe_units_{units_k}.npz", k=units_k,
                                 max_items=train_items, progress=False)
    frames = unit_probe(codec, corpus, rows, codes, units, codebooks=(1, 2, 3))
    lines = ["## Semantic codebook probe", "",
             "Linear probes on one codebook at a time, trained on training speakers, tested on "
             "held-out speakers. Word: identity of the 50 most frequent words (of 0.25 s or "
             "more) from bags of codes of each third of the word. Unit: each frame's "
             f"{units_k}-unit GSLM label (k-means of Whisper states) from the codes at t-1, t, t+1.",
             "", "| probe | codebook | accuracy | chance | classes | tokens train/test |",
             "|---|---|---|---|---|---|"]
    for name, results in (("word", words), ("unit", frames)):
        for r in results:
            lines.append(f"| {name} | {r.codebook} | {r.accuracy:.3f} | {r.chance:.3f} | "
                         f"{r.words} | {r.train_tokens}/{r.test_tokens} |")
    return lines + [""]
