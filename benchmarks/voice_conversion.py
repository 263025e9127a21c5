"""python benchmarks/voice_conversion.py --checkpoint RUN --data data/corpus [--pairs 20]
    [--prompt-seconds 6] [--keep 1,2] [--out reports/convert]

Voice conversion (`voxlm convert`) measured as the default-model issue asks: is the content kept
(Whisper tiny.en WER of the converted speech against the source's own WER), and does it sound like
the target (Resemblyzer similarity to the target voice above similarity to the source voice)?

Pairs: each source is an item of split test (voices never trained on), 2 to 12 s; its target is
an item of split train in another voice, and the similarity to the target is taken against a
*different* item of that voice (not the prompt the model heard), so copying the prompt scores no
better than speaking in its voice. Systems, on the same sources in the same run:
  - source: the original recording;
  - codec: the source through the codec (every codebook: the content and voice the LM starts from);
  - codec, n_q codebooks: the same at the LM's codebooks only, the ceiling of what it can say;
  - converted: `convert_voice` with the target's first --prompt-seconds as the voice prompt,
    once per --keep K (the source's codebooks 1..K kept, the others generated).
Writes OUT/results.json and OUT/report.md, and prints the table.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxlm.audio import load_audio  # noqa: E402
from voxlm.codec.files import decode_codes, encode_audio  # noqa: E402
from voxlm.convert import convert_voice  # noqa: E402
from voxlm.data import read_manifest, strict_json, write_atomic, write_json  # noqa: E402
from voxlm.eval.metrics import Judges  # noqa: E402
from voxlm.lm.generate import SamplingOptions  # noqa: E402
from voxlm.lm.speech import load_speech_lm  # noqa: E402


def pick_pairs(rows: list, count: int, seed: int) -> list:
    """[(source row, prompt row, other row of the prompt's voice)]."""
    rng = random.Random(seed)
    by_voice = defaultdict(list)
    for row in rows:
        if row["split"] == "train" and row["duration"] >= 3.0:
            by_voice[row["speaker"]].append(row)
    voices = sorted(v for v, items in by_voice.items() if len(items) >= 2)
    sources = [r for r in rows if r["split"] == "test" and 2.0 <= r["duration"] <= 12.0]
    rng.shuffle(sources)
    if not voices or not sources:
        raise SystemExit("need split-test items of 2-12 s and two train items per target voice; "
                         "make a corpus with `voxlm synth corpus`")
    pairs = []
    for source in sources[:count]:
        voice = rng.choice([v for v in voices if v != source["speaker"]] or voices)
        prompt, other = rng.sample(by_voice[voice], 2)
        pairs.append((source, prompt, other))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="speech LM run folder or model file")
    parser.add_argument("--data", required=True, type=Path, help="corpus folder (manifest.jsonl)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--prompt-seconds", type=float, default=6.0)
    parser.add_argument("--keep", default="1",
                        help="comma-separated K: one converted system per number of source "
                             "codebooks kept")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/convert"))
    args = parser.parse_args()

    keeps = [int(k) for k in args.keep.split(",")]
    converted = [f"converted, keep {k}" if len(keeps) > 1 else "converted" for k in keeps]
    model = load_speech_lm(args.checkpoint)
    lm_codec = f"codec, {model.lm.config.n_q} codebooks"  # what the LM's output can carry
    codec = model.codec()
    judges = Judges(threads=2)
    rows = read_manifest(args.data / "manifest.jsonl")
    sampling = SamplingOptions(temperature=args.temperature, top_k=50)
    results, began = [], time.time()
    for k, (source, prompt, other) in enumerate(pick_pairs(rows, args.pairs, args.seed)):
        audio = load_audio(args.data / source["audio"])
        target = load_audio(args.data / prompt["audio"])
        reference_voice = load_audio(args.data / other["audio"])
        codes = encode_audio(codec, audio)
        systems = {"source": audio, "codec": decode_codes(codec, codes)[:len(audio)],
                   lm_codec: decode_codes(codec, codes[:model.lm.config.n_q])[:len(audio)]}
        for name, keep in zip(converted, keeps):
            systems[name] = convert_voice(model.lm, codec, audio, target, sampling, model.layout,
                                          args.prompt_seconds, seed=args.seed + k, keep=keep).audio
        voice_emb, source_emb = (judges.speaker_embedding(reference_voice),
                                 judges.speaker_embedding(audio))
        entry = {"id": source["id"], "source_voice": source["speaker"],
                 "target_voice": prompt["speaker"], "text": source["text"]}
        for name, wav in systems.items():
            hyp, errors, words = judges.word_errors(wav, source["text"])
            entry[name] = {"transcript": hyp, "errors": errors, "words": words,
                           "sim_target": judges.speaker_similarity(None, wav, voice_emb),
                           "sim_source": judges.speaker_similarity(None, wav, source_emb)}
        results.append(entry)
        print(f"{k + 1}/{args.pairs} {source['id']} -> {prompt['speaker']}: " + "; ".join(
            f"{name} WER {entry[name]['errors']}/{entry[name]['words']}, sim target "
            f"{entry[name]['sim_target']:.3f} source {entry[name]['sim_source']:.3f}"
            for name in converted), flush=True)
    summary = {}
    for name in ("source", "codec", lm_codec, *converted):
        errors = sum(e[name]["errors"] for e in results)
        words = sum(e[name]["words"] for e in results)
        target = [e[name]["sim_target"] for e in results if not math.isnan(e[name]["sim_target"])]
        source = [e[name]["sim_source"] for e in results if not math.isnan(e[name]["sim_source"])]
        closer = [e[name]["sim_target"] > e[name]["sim_source"] for e in results]
        summary[name] = {"wer": errors / max(words, 1), "sim_target": float(np.mean(target)),
                         "sim_source": float(np.mean(source)),
                         "closer_to_target": sum(closer) / len(closer)}
    source_wer = summary["source"]["wer"]
    ratios = {name: summary[name]["wer"] / source_wer if source_wer else None  # None: source 0%
              for name in converted}
    lines = [f"Voice conversion, {len(results)} pairs (sources: split test of {args.data}; "
             f"targets: other voices of split train), prompt {args.prompt_seconds:g} s, "
             f"checkpoint {args.checkpoint}, {time.time() - began:.0f} s.", "",
             "| system | WER | similarity to target voice | similarity to source voice | "
             "closer to target |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {100 * s['wer']:.1f}% | {s['sim_target']:.3f} | "
                     f"{s['sim_source']:.3f} | {100 * s['closer_to_target']:.0f}% |")
    lines.append("")
    for name, ratio in ratios.items():
        shown = f"{ratio:.2f}" if ratio is not None else "undefined (source WER 0%)"
        lines.append(f"- {name}: WER / source WER {shown} (bar: 1.5 at most); similarity to the "
                     f"target {summary[name]['sim_target']:.3f} against the source "
                     f"{summary[name]['sim_source']:.3f} (bar: above).")
    write_json(args.out / "results.json",  # NaN similarities (near-silent audio) -> null
               strict_json({"summary": summary, "wer_ratio": ratios, "pairs": results}))
    write_atomic(args.out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
