"""python benchmarks/synth_corpus.py --minutes 10 --out /tmp/bench-corpus

Corpus generation speed with the engines mixed: wall-clock real-time factor of the whole run
(2 workers), each engine's own real-time factor (audio seconds / synthesis seconds, alignment
included), voices used, and disk per hour of audio. Prints a markdown block for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections import defaultdict
from pathlib import Path

from voxlm.synth.corpus import CorpusConfig, synthesize_corpus


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-corpus"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = synthesize_corpus(args.out, CorpusConfig(minutes=args.minutes, workers=args.workers))
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    audio_s = sum(r["duration"] for r in rows)
    per_engine = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        per_engine[r["engine"]][0] += r["duration"]
        per_engine[r["engine"]][1] += r["synth_seconds"]
        per_engine[r["engine"]][2] += 1
    disk = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    voices = sorted({r["speaker"] for r in rows})
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"\ncommand: python benchmarks/synth_corpus.py --minutes {args.minutes:g} "
          f"--workers {args.workers}")
    print(f"machine: {cpu}, {args.workers} workers")
    print(f"corpus: {len(rows)} items, {audio_s / 60:.1f} min of audio in {wall:.0f} s wall: "
          f"{audio_s / wall:.1f}x real time (start-up of workers and models included)")
    print(f"voices: {len(voices)} over {len(per_engine)} engines")
    print(f"disk: {disk / 1e6:.1f} MB, {disk / 1e6 / (audio_s / 3600):.0f} MB per hour of audio")
    print("| engine | items | audio min | real-time factor (one worker) |\n|---|---|---|---|")
    for name, (a, s, n) in sorted(per_engine.items()):
        print(f"| {name} | {n} | {a / 60:.1f} | {a / s:.1f}x |")


if __name__ == "__main__":
    main()
