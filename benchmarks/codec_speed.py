"""python benchmarks/codec_speed.py [--peer mimi voxlm] [--seconds 10] [--config base [tiny]]

Streaming codec speed on one CPU thread, side by side with the Mimi architecture (DESIGN.md 7):
each frame is encoded then decoded inside `with model.streaming(1):`, the way a live dialogue
uses the codec, and the wall time per frame is compared with the audio time it covers.

Each peer runs in its own process with its own Python, so neither environment needs the other's
packages:
  mimi   /work/benchvenv/bin/python (plain venv: torch cpu + `pip install --no-deps moshi`,
         einops, safetensors, sentencepiece, huggingface_hub, sphn, numpy); random weights,
         `loaders.get_mimi(None, device="cpu")`, 1920-sample frames at 24 kHz (12.5 Hz)
  voxlm  this Python; `Codec(codec_config(--config))` with random weights (one process per
         preset when several are given), or `--checkpoint` (`load_codec`),
         `codec.config.hop`-sample frames at 16 kHz

Printed per peer: RTF = wall processing time / audio time (below 1 is faster than real time),
"x real time" (its inverse), CPU-time RTF (this process's CPU seconds / audio seconds: closer to
the unloaded figure when other jobs share the cores; the wall RTF is the one a live session
feels), mean / p95 / max milliseconds per frame and parameters. Run it on an idle machine.
The parent prints a markdown table for docs/BENCHMARKS.md and the voxlm / mimi speed ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from peers import BENCH_PYTHON, REPO, run_peer

WARMUP_FRAMES = 10  # frames run (and thrown away) before timing: allocator and kernel warm-up


def _time_stream(model, frames, encode, decode) -> tuple:
    """frames: list of [1, 1, hop] tensors -> (wall seconds per frame for encode + decode,
    CPU seconds of this process for all frames: less sensitive to other jobs on the machine)."""
    import torch

    with torch.no_grad():
        with model.streaming(1):  # warm-up in its own streaming session, state thrown away
            for frame in frames[:WARMUP_FRAMES]:
                decode(encode(frame))
        times = []
        cpu_start = time.process_time()
        with model.streaming(1):
            for frame in frames:
                start = time.perf_counter()
                codes = encode(frame)  # [1, K, 1] int64
                audio = decode(codes)  # [1, 1, hop]
                times.append(time.perf_counter() - start)
                assert audio.shape[-1] == frame.shape[-1], (audio.shape, frame.shape)
        cpu = time.process_time() - cpu_start
    return times, cpu


def _frames(seconds: float, sample_rate: int, hop: int) -> list:
    """A seeded test signal (two tones + noise) cut in [1, 1, hop] frames."""
    import torch

    n = int(round(seconds * sample_rate / hop))
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(n * hop) / sample_rate
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 1320 * t)
    wave = wave + 0.02 * torch.randn(n * hop, generator=gen)
    return list(wave.reshape(n, 1, 1, hop))


def _summary(name: str, model, timed: tuple, hop: int, sample_rate: int, extra: dict) -> dict:
    import numpy as np

    times, cpu = timed
    ms = 1000 * np.array(times)
    frame_ms = 1000 * hop / sample_rate
    audio_s = len(times) * hop / sample_rate
    return {"peer": name, "params": sum(p.numel() for p in model.parameters()),
            "sample_rate": sample_rate, "hop": hop, "frames": len(times),
            "audio_s": audio_s, "rtf": float(ms.mean() / frame_ms), "cpu_rtf": cpu / audio_s,
            "ms_mean": float(ms.mean()), "ms_p95": float(np.percentile(ms, 95)),
            "ms_max": float(ms.max()), "frame_ms": frame_ms, **extra}


def child_mimi(args) -> dict:
    import torch
    from moshi.models import loaders

    torch.manual_seed(0)
    mimi = loaders.get_mimi(None, device="cpu").eval()  # random weights: speed only
    hop = int(mimi.sample_rate / mimi.frame_rate)  # 24000 / 12.5 = 1920 samples
    frames = _frames(args.seconds, mimi.sample_rate, hop)
    times = _time_stream(mimi, frames, mimi.encode, mimi.decode)
    return _summary("mimi", mimi, times, hop, mimi.sample_rate,
                    {"codebooks": mimi.num_codebooks, "config": "random weights"})


def child_voxlm(args) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    try:
        from voxlm.codec.model import Codec, codec_config, load_codec
    except ImportError as exc:  # the codec model is not written yet in this checkout
        return {"peer": "voxlm", "skipped": f"voxlm.codec.model not importable ({exc})"}
    torch.manual_seed(0)
    if args.checkpoint:
        if not Path(args.checkpoint).exists():
            return {"peer": "voxlm", "skipped": f"checkpoint {args.checkpoint} does not exist"}
        codec, config = load_codec(args.checkpoint).eval(), f"checkpoint {args.checkpoint}"
    else:
        codec, config = Codec(codec_config(args.config)).eval(), f"{args.config}, random weights"
    from voxlm.audio import SAMPLE_RATE

    hop = codec.config.hop  # 1280 samples at 16 kHz = 80 ms (12.5 Hz)
    frames = _frames(args.seconds, SAMPLE_RATE, hop)
    times = _time_stream(codec, frames, codec.encode, codec.decode)
    codebooks = getattr(codec.config, "codebooks", None) or getattr(codec.config, "n_q", None)
    return _summary("voxlm", codec, times, hop, SAMPLE_RATE,
                    {"codebooks": codebooks, "config": config, **_time_pitch(codec, frames)})


def _time_pitch(codec, frames) -> dict:
    """The pitch side channel's tracker (`codec roundtrip --pitch`), per frame, on the same
    frames: what sending the input's pitch adds to the encoder's time."""
    import numpy as np

    if not codec.has_pitch_input:
        return {}
    from voxlm.codec.pitch_side import PitchEncoder

    tracker, times = PitchEncoder(codec.config.hop), []
    for frame in frames:
        start = time.perf_counter()
        tracker.step(frame[0, 0].numpy())
        times.append(time.perf_counter() - start)
    return {"pitch_ms_mean": 1000 * float(np.mean(times[WARMUP_FRAMES:]))}


def run_child(peer: str, args, config: str) -> dict:
    child = ["--child", peer, "--seconds", args.seconds, "--config", config]
    child += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    return run_peer(peer, __file__, child, BENCH_PYTHON if peer == "mimi" else None)


def table(results: list) -> str:
    rows = ["| codec | config | params | frame | RTF (1 thread) | x real time | CPU-time RTF "
            "| ms/frame mean | p95 | max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            rows.append(f"| {r['peer']} | skipped: {r['skipped']} ||||||||")
            continue
        rows.append(f"| {r['peer']} | {r['config']}, {r['codebooks']} codebooks | "
                    f"{r['params'] / 1e6:.1f} M | {r['hop']} @ {r['sample_rate'] // 1000} kHz "
                    f"({r['frame_ms']:.0f} ms) | {r['rtf']:.3f} | {1 / r['rtf']:.2f} | "
                    f"{r['cpu_rtf']:.3f} | "
                    f"{r['ms_mean']:.2f} | {r['ms_p95']:.2f} | {r['ms_max']:.2f} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", nargs="+", choices=("mimi", "voxlm"), default=["mimi", "voxlm"],
                        help="which codecs to time, each in its own process")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio timed per peer")
    parser.add_argument("--config", nargs="+", default=["base"],
                        help="voxlm presets to time: base (shipped) and/or tiny")
    parser.add_argument("--checkpoint", default=None, help="time a trained voxlm codec instead")
    parser.add_argument("--child", choices=("mimi", "voxlm"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        args.config = args.config[0]
        result = (child_mimi if args.child == "mimi" else child_voxlm)(args)
        print(json.dumps(result))
        return
    results = []
    for peer in args.peer:
        for config in (args.config if peer == "voxlm" and not args.checkpoint else args.config[:1]):
            label = f"{peer} {config}" if peer == "voxlm" and not args.checkpoint else peer
            print(f"timing {label} ({args.seconds:g} s of audio, 1 thread)...", file=sys.stderr)
            results.append(run_child(peer, args, config))
    print(table(results))
    for r in results:
        if "pitch_ms_mean" in r:
            print(f"\nvoxlm ({r['config']}): its pitch side channel's tracker (--pitch) adds "
                  f"{r['pitch_ms_mean']:.2f} ms per frame")
    mimi = next((r for r in results if r["peer"] == "mimi" and "skipped" not in r), None)
    for r in results:
        if r["peer"] == "voxlm" and "skipped" not in r and mimi is not None:
            print(f"\nvoxlm ({r['config']}): {r['ms_mean']:.2f} ms per {r['frame_ms']:.0f} ms "
                  f"frame, RTF {r['rtf']:.3f}, {r['params'] / 1e6:.1f} M params; Mimi: "
                  f"{mimi['ms_mean']:.1f} ms, RTF {mimi['rtf']:.3f}, "
                  f"{mimi['params'] / 1e6:.1f} M; voxlm is {mimi['rtf'] / r['rtf']:.1f}x the "
                  f"speed of Mimi (streaming encode + decode, 1 thread)")


if __name__ == "__main__":
    main()
