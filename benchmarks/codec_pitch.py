"""python benchmarks/codec_pitch.py --data data/heldout --data data/realset [--checkpoint C ...]
    [--limit 12] [--out reports/codec_pitch]

Where the harmonic-plus-noise codec loses quality: its F0. Per evaluation set and codec, on the
same held-out files (the first --limit of `voxlm eval codec`'s spread over speakers), at every
codebook of the codec:
  - F0 from the codes against YIN on the input (`voxlm.pitch`, the training targets): median
    ratio predicted / YIN on frames both call voiced, the share of frames off by more than 20%
    (gross errors), the median absolute error in cents on frames YIN calls voiced (per 10 ms
    frame, and of the mean over each codec frame where all its 10 ms frames are voiced: what
    the codes carry, against what the contour within a codec frame adds), and voicing
    agreement; per speaker as well, since the error can be a bias;
  - STOI and PESQ (wb) of the decoded audio as the codec makes it (F0 predicted from the codes)
    and, as a ceiling, decoded from the same codes with the YIN F0 of the input (oracle F0):
    what the codes' other content is worth once F0 is right.
--checkpoint is repeatable (default: the shipped codec). Writes OUT/results.json and
OUT/report.md, and prints the tables.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxlm.audio import SAMPLE_RATE, load_audio  # noqa: E402
from voxlm.codec.model import STFT_HOP, load_codec  # noqa: E402
from voxlm.data import write_atomic, write_json  # noqa: E402
from voxlm.eval.codec_suite import eval_rows  # noqa: E402
from voxlm.pitch import pitch_track  # noqa: E402

GROSS = 0.2  # a frame's F0 is a gross error when more than 20% off


def yin_targets(audio: np.ndarray, frames: int) -> np.ndarray:
    """[frames] YIN F0 (Hz, 0 unvoiced) aligned as in training: decoder frame t ends on the
    tracker's frame t + 1."""
    f0 = pitch_track(audio)[0][1: frames + 1]
    return np.pad(f0, (0, frames - len(f0))).astype(np.float32)


@torch.no_grad()
def score_file(codec, audio: np.ndarray) -> dict:
    from pesq import pesq
    from pystoi import stoi

    audio = audio[: len(audio) // codec.config.hop * codec.config.hop]
    frames = len(audio) // STFT_HOP
    target = yin_targets(audio, frames)
    latents = codec.quantizer.decode(codec.encode(torch.from_numpy(audio)[None, None]))
    made, pitch = codec.decoder(latents)  # F0 from the codes, as the codec decodes
    oracle, _ = codec.decoder(latents, torch.from_numpy(target)[None])  # F0 from YIN
    made, oracle = made[0, 0].numpy(), oracle[0, 0].numpy()
    predicted = pitch.log_f0[0].exp().numpy()
    voiced, called = target > 0, pitch.voicing_logit[0].numpy() > 0
    both = voiced & called
    ratio = predicted[both] / target[both]
    error = 1200 * np.log2(predicted / np.where(voiced, target, 1.0))  # cents where voiced
    sub = codec.config.hop // STFT_HOP  # 10 ms frames per codec frame
    whole = frames // sub * sub
    in_frame = voiced[:whole].reshape(-1, sub).all(1)
    cents, frame_cents = error[voiced], error[:whole].reshape(-1, sub)[in_frame].mean(1)
    return {"stoi": stoi(audio, made, SAMPLE_RATE), "pesq": pesq(SAMPLE_RATE, audio, made, "wb"),
            "stoi_oracle_f0": stoi(audio, oracle, SAMPLE_RATE),
            "pesq_oracle_f0": pesq(SAMPLE_RATE, audio, oracle, "wb"),
            "ratios": ratio.tolist(), "cents": cents.tolist(), "frame_cents": frame_cents.tolist(),
            "voicing_agreement": float(np.mean(voiced == called)),
            "yin_median_hz": float(np.median(target[voiced])) if voiced.any() else float("nan")}


def summarize(scores: list) -> dict:
    ratios = np.concatenate([np.asarray(s["ratios"]) for s in scores])
    out = {k: float(np.mean([s[k] for s in scores]))
           for k in ("stoi", "pesq", "stoi_oracle_f0", "pesq_oracle_f0", "voicing_agreement")}
    cents = {k: np.abs(np.concatenate([np.asarray(s[k]) for s in scores]))
             for k in ("cents", "frame_cents")}
    out.update(files=len(scores), f0_ratio_median=float(np.median(ratios)),
               cents_median=float(np.median(cents["cents"])),
               frame_cents_median=float(np.median(cents["frame_cents"])),
               gross_error_share=float(np.mean(np.abs(np.log(ratios)) > np.log(1 + GROSS))),
               yin_median_hz=float(np.median([s["yin_median_hz"] for s in scores])))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="codec file or run folder (repeatable; default: shipped)")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("reports/codec_pitch"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoints = args.checkpoint or [None]
    results, lines = {}, ["# F0 from the codes, and what oracle F0 would give", ""]
    t0 = time.time()
    for folder in args.data:
        rows = eval_rows(folder, args.limit)
        header = ("| codec | files | YIN median Hz | F0 ratio (codes / YIN), median | gross F0 "
                  "errors | F0 error, median cents (10 ms / codec frame) | voicing agreement | STOI | "
                  "STOI, oracle F0 | PESQ | PESQ, oracle F0 |")
        lines += [f"## {folder.name}: {len(rows)} files", "", header, "|---" * 11 + "|"]
        speaker_lines = []
        for checkpoint in checkpoints:
            name = "shipped" if checkpoint is None else str(checkpoint)
            codec = load_codec(checkpoint)
            scores = [score_file(codec, load_audio(folder / row["audio"])) for row in rows]
            s = summarize(scores)
            by_speaker = defaultdict(list)
            for row, score in zip(rows, scores):
                by_speaker[row["speaker"]].append(score)
            speakers = {k: summarize(v) for k, v in by_speaker.items()}
            results[f"{folder.name}/{name}"] = {"all": s, "speakers": speakers}
            lines.append(f"| {name} | {s['files']} | {s['yin_median_hz']:.0f} | "
                         f"{s['f0_ratio_median']:.2f} | {s['gross_error_share']:.0%} | "
                         f"{s['cents_median']:.0f} / {s['frame_cents_median']:.0f} | "
                         f"{s['voicing_agreement']:.0%} | {s['stoi']:.3f} | "
                         f"{s['stoi_oracle_f0']:.3f} | {s['pesq']:.2f} | {s['pesq_oracle_f0']:.2f} |")
            for speaker, v in sorted(speakers.items()):
                speaker_lines.append(f"| {name} | {speaker} | {v['files']} | "
                                     f"{v['yin_median_hz']:.0f} | {v['f0_ratio_median']:.2f} | "
                                     f"{v['gross_error_share']:.0%} |")
        lines += ["", "| codec | speaker | files | YIN median Hz | F0 ratio, median | gross F0 "
                  "errors |", "|---" * 6 + "|", *speaker_lines, ""]
    lines.append(f"{time.time() - t0:.0f} s in all, one thread.")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    write_atomic(args.out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
