"""`voxlm demo`, the main job of the README's first command.

Until the default voice model ships, the demo shows the synthetic speech world every later stage
learns from: it synthesizes short two-channel spoken dialogues (user on the left channel, the
assistant on the right), prints their transcripts with timings and says how to listen.
"""
from __future__ import annotations

import time
from pathlib import Path


def run_demo(out, count: int = 2, seed: int = 7) -> Path:
    from .data import read_manifest
    from .synth.dialogue import DialogueConfig, synthesize_dialogues

    out = Path(out)
    t0 = time.perf_counter()
    config = DialogueConfig(seed=seed, qa_share=0.5)
    manifest = synthesize_dialogues(out, count, config, workers=min(2, count))
    rows = read_manifest(manifest)
    print(f"\nvoxlm demo: {len(rows)} spoken dialogues in {time.perf_counter() - t0:.0f} s\n")
    for row in rows:
        wav = (out / row["audio"]).resolve()
        print(f"{wav}  ({row['duration']:.1f} s, user {row['user_voice']}, "
              f"assistant {row['assistant_voice']})")
        for turn in sorted(row["turns"], key=lambda t: t["start"]):
            who = "user     " if turn["channel"] == 0 else "assistant"
            cut = " [interrupted]" if turn.get("interrupted") else ""
            print(f"  {turn['start']:6.2f}-{turn['end']:6.2f} s  {who}  {turn['text']}{cut}")
        print()
    first = (out / rows[0]["audio"]).resolve()
    print(f"listen: `play {first}` (sox) or `aplay {first}`; channel 0 (left) is the user, "
          "channel 1 (right) the assistant.")
    print(f"manifest with word timings: {manifest.resolve()}")
    return manifest
