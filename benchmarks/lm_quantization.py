"""python benchmarks/lm_quantization.py --checkpoint RUN|MODEL --data TOKENS [--limit 40]
    [--out reports/lm_quantization]

What shrinking an LM file costs: the same weights written as fp16, int8 (per-row scales) and
int4 (a scale per 32 weights), each file's size and its held-out cross-entropy per stream
(`eval.lm.validation_losses`, split valid and test, every layout the LM was trained with), in
the same run. The peer is the fp16 file (the weights as trained, to fp16 rounding).
Writes OUT/results.json and OUT/report.md, and prints the table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxlm.data import write_atomic, write_json  # noqa: E402
from voxlm.eval.lm import validation_losses  # noqa: E402
from voxlm.lm.model import save_lm  # noqa: E402
from voxlm.lm.speech import load_speech_lm  # noqa: E402

FORMATS = {"fp16": {}, "int8": {"int8": True}, "int4": {"int4": True}}


def measure(checkpoint, data, limit: int) -> dict:
    source = load_speech_lm(checkpoint)
    results = {"checkpoint": str(checkpoint), "data": str(data), "limit": limit, "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in FORMATS.items():
            path = save_lm(Path(folder) / f"{name}.safetensors", source.lm, dtype=torch.float16,
                           extra=source.extra, **flags)
            model = load_speech_lm(path)
            began = time.time()
            rows = validation_losses(model.lm, data, limit=limit, extra=model.extra)
            size, seconds = path.stat().st_size, time.time() - began
            results["formats"][name] = {"bytes": size, "losses": rows, "seconds": round(seconds, 1)}
            print(f"{name}: {size / 1e6:.1f} MB, {seconds:.0f} s", flush=True)
    return results


def report(results: dict) -> str:
    formats = results["formats"]
    lines = [f"checkpoint `{results['checkpoint']}`, tokens `{results['data']}`, first "
             f"{results['limit']} streams of each held-out split\n",
             "| split | layout | stream | " + " | ".join(formats) + " |",
             "|---|---|---|" + "---|" * len(formats)]
    base = formats["fp16"]["losses"]
    for index, row in enumerate(base):
        for stream in ("text", "semantic", "audio"):
            if row[stream] is None:
                continue
            cells = [f"{f['losses'][index][stream]:.3f}" for f in formats.values()]
            lines.append(f"| {row['split']} | {row['layout']} | {stream} | " + " | ".join(cells) + " |")
    lines.append("| | | **file size (MB)** | " + " | ".join(
        f"{f['bytes'] / 1e6:.1f}" for f in formats.values()) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="run folder or LM file")
    parser.add_argument("--data", required=True, type=Path, help="the tokens it was trained on")
    parser.add_argument("--limit", type=int, default=40, help="streams per held-out split")
    parser.add_argument("--out", type=Path, default=Path("reports/lm_quantization"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = measure(args.checkpoint, args.data, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    table = report(results)
    write_atomic(args.out / "report.md", table.encode())
    print(table)


if __name__ == "__main__":
    main()
