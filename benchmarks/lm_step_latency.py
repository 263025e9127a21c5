"""python benchmarks/lm_step_latency.py [--frames N] [--warmup N] [--peer PEER...] [--text-card V]

Generation step latency of the speech-text LM on one CPU thread, side by side with Kyutai moshi's
`LMModel` at the same dimensions (DESIGN.md 7), both with random weights. A step is what a live
dialogue runs once per 80 ms frame (12.5 Hz): one temporal transformer step over the KV cache,
then the depth loop that samples the model's text token and its 8 codebooks. The goal: one step
at the default size (`lm_config("base")`) in 20 ms or less on one CPU thread.

Each peer runs in its own process with its own Python, `torch.set_num_threads(1)`:
  voxlm  this Python; `LM(lm_config("base"))` (text_card from --text-card), `LMGen(lm,
         SamplingOptions(), int8=...)`, timed in fp32 (`int8=False`) and with int8 weights
         (`int8=True`, fbgemm dynamic quantization); `gen.step(frame)` with frame [1, 17] random
         valid ids (text, 8 model codebooks, 8 user codebooks) inside `with gen.streaming(1):`
  moshi  /work/benchvenv/bin/python (torch cpu + `pip install --no-deps moshi`, as codec_speed.py);
         `lm.LMModel(**(loaders._lm_kwargs | MOSHI_OVERRIDES))` in float32, so every choice not
         overridden is Moshi's own (RoPE, RMSNorm, SiLU gating, per-codebook depformer weights
         and input projections, delays [0, 0, 1 x 7, 0, 1 x 7]); driven by moshi's own
         `lm.LMGen(model)` (its defaults: sampling, temperature 0.8 / text 0.7, top-k 250 / 25,
         the same as voxlm's SamplingOptions) with `lm_gen.step(codes)`, codes [1, 8, 1] random
         user audio ids, inside `with lm_gen.streaming(1):`, the way moshi's server calls it.
         LMGen disables its CUDA graphs by itself off CUDA; the child sets NO_TORCH_COMPILE=1 so
         moshi's few `torch_compile_lazy` functions outside its layers (the output RMSNorm) run
         eagerly like the rest of both models.

Same dimensions: width 512, 8 layers, 8 heads, context 375 frames; depth 256 wide, 2 layers,
4 heads; SwiGLU hidden 3 x width in both stacks (moshi's ActivationGating uses hidden =
2 * dim_feedforward / 3, hence hidden_scale 4.5 -> 1536 and depformer_dim_feedforward 1152 ->
768); 8 + 8 codebooks of 1024; text_card ids. Architecture left as each project has it: moshi
samples text from a 512-wide head on the temporal output (16.4 M weights read per step at 32000
ids) then runs its depformer 8 times with separate weights and input projection per codebook
(8 sets of depth weights read per frame: more parameters and memory traffic, the same
multiply-adds); voxlm runs its depth transformer 9 times (text at position 0, 256-wide head:
8.2 M weights) with one set of weights shared by all positions.

Per step: the wall time of one `step` call (perf_counter), after --warmup steps in a streaming
session of their own (thrown away), so the timed frames sit at positions 0..frames-1 of a fresh
KV cache in both models. Below 375 frames voxlm attends to the stored frames only and moshi to
its whole 375-slot ring buffer under a mask (a small part of a step at these sizes); more than
375 frames time the steady state of a long dialogue, a full window in both. Printed: mean / p50
/ p95 ms per step, CPU ms per step (this process's CPU seconds / steps: closer to the unloaded
figure when other jobs share the cores), parameters, and moshi's mean / this mean (above 1:
faster than moshi). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from peers import BENCH_PYTHON, REPO, run_peer

FRAME_MS = 80.0  # one frame at 12.5 Hz
GOAL_MS = 20.0  # one step at the base size on one CPU thread
MOSHI_OVERRIDES = {  # on top of moshi's loaders._lm_kwargs (the 7B Moshi), to voxlm's base sizes
    "dim": 512, "num_heads": 8, "num_layers": 8, "context": 375,
    "hidden_scale": 4.5,  # ActivationGating hidden = 2 * int(4.5 * 512) / 3 = 1536 = 3 x 512
    "depformer_dim": 256, "depformer_num_layers": 2, "depformer_num_heads": 4,
    "depformer_dim_feedforward": 1152,  # hidden = 2 * 1152 / 3 = 768 = 3 x 256
    "n_q": 16, "dep_q": 8, "card": 1024,  # 8 model + 8 user codebooks, 8 generated
}


def _time_steps(streaming, step, inputs: list, warmup: int) -> tuple:
    """Runs step(x) for x in inputs inside streaming(1), the first `warmup` in a session of their
    own -> (wall seconds per timed step, CPU seconds of this process for the timed steps)."""
    import torch

    with torch.no_grad():
        with streaming(1):
            for x in inputs[:warmup]:
                step(x)
        times = []
        cpu_start = time.process_time()
        with streaming(1):
            for x in inputs[warmup:]:
                start = time.perf_counter()
                step(x)
                times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu_start
    return times, cpu


def _summary(peer: str, config: str, params: int, timed: tuple) -> dict:
    import numpy as np

    times, cpu = timed
    ms = 1000 * np.array(times)
    return {"peer": peer, "config": config, "params": params, "frames": len(times),
            "ms_mean": float(ms.mean()), "ms_p50": float(np.percentile(ms, 50)),
            "ms_p95": float(np.percentile(ms, 95)), "ms_max": float(ms.max()),
            "cpu_ms": 1000 * cpu / len(times)}


def child_voxlm(args) -> list:
    sys.path.insert(0, str(REPO))
    from dataclasses import replace

    import torch

    from voxlm.lm.generate import LMGen, SamplingOptions
    from voxlm.lm.model import LM, lm_config

    torch.manual_seed(0)
    config = replace(lm_config("base"), text_card=args.text_card)
    lm = LM(config).eval()  # random weights: speed only
    params = sum(p.numel() for p in lm.parameters())
    n = args.warmup + args.frames
    text = torch.randint(0, config.text_card, (n, 1, 1))
    audio = torch.randint(0, config.card, (n, 1, config.n_streams - 1))
    frames = list(torch.cat([text, audio], dim=2))  # n x [1, S] int64
    rows = []
    for int8 in (False, True):
        gen = LMGen(lm, SamplingOptions(), int8=int8)
        timed = _time_steps(gen.streaming, gen.step, frames, args.warmup)
        label = "int8 weights (fbgemm dynamic)" if int8 else "fp32"
        size = "base" if args.text_card == 32000 else f"base, text_card {args.text_card}"
        rows.append(_summary("voxlm", f"{size}, {label}", params, timed))
    return rows


def child_moshi(args) -> list:
    import torch
    from moshi.models import lm, loaders

    torch.manual_seed(0)
    kwargs = dict(loaders._lm_kwargs) | MOSHI_OVERRIDES | {"text_card": args.text_card}
    model = lm.LMModel(device="cpu", dtype=torch.float32, **kwargs).eval()  # random weights
    params = sum(p.numel() for p in model.parameters())
    gen = lm.LMGen(model)  # moshi's defaults (see docstring); no CUDA graphs on CPU
    n = args.warmup + args.frames
    user = torch.randint(0, model.card, (n, 1, model.n_q - model.dep_q, 1))
    timed = _time_steps(gen.streaming, gen.step, list(user), args.warmup)  # [1, 8, 1] each
    return [_summary("moshi", "LMModel same sizes, fp32", params, timed)]


def run_child(peer: str, args) -> list:
    child = ["--child", peer, "--frames", args.frames, "--warmup", args.warmup,
             "--text-card", args.text_card]
    moshi = peer == "moshi"  # NO_TORCH_COMPILE is read when moshi is imported
    out = run_peer(peer, __file__, child, BENCH_PYTHON if moshi else None,
                   {"NO_TORCH_COMPILE": "1"} if moshi else None)
    return [out] if "skipped" in out else out["rows"]


def table(results: list) -> str:
    moshi = next((r for r in results if r["peer"] == "moshi" and "skipped" not in r), None)
    rows = ["| LM | config | params | ms/step mean | p50 | p95 | CPU ms/step | vs moshi |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            rows.append(f"| {r['peer']} | skipped: {r['skipped']} |||||||")
            continue
        ratio = f"{moshi['ms_mean'] / r['ms_mean']:.2f}x" if moshi else "-"
        rows.append(f"| {r['peer']} | {r['config']} | {r['params'] / 1e6:.1f} M | "
                    f"{r['ms_mean']:.2f} | {r['ms_p50']:.2f} | {r['ms_p95']:.2f} | "
                    f"{r['cpu_ms']:.2f} | {ratio} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", nargs="+", choices=("voxlm", "moshi"),
                        default=["voxlm", "moshi"], help="LMs to time, each in its own process")
    parser.add_argument("--frames", type=int, default=100,
                        help="timed steps per run (past 375: a full context window)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="steps run first in a streaming session of their own, not timed")
    parser.add_argument("--text-card", type=int, default=32000, help="text vocabulary, both LMs")
    parser.add_argument("--child", choices=("voxlm", "moshi"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be 1 or more and --warmup 0 or more")
    if args.child:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        rows = (child_voxlm if args.child == "voxlm" else child_moshi)(args)
        print(json.dumps({"rows": rows}))
        return
    results = []
    for peer in args.peer:
        print(f"timing {peer} ({args.warmup} + {args.frames} steps, 1 thread)...", file=sys.stderr)
        results += run_child(peer, args)
    print(table(results))
    print(f"\nGoal: one step at the base size (text_card 32000) in <= {GOAL_MS:.0f} ms on one CPU "
          f"thread (a frame is {FRAME_MS:.0f} ms at 12.5 Hz); random weights, "
          f"{args.frames} timed steps, text_card {args.text_card}.")
    for r in results:
        if r["peer"] == "voxlm" and "skipped" not in r:
            met = "met" if r["ms_mean"] <= GOAL_MS else "not met"
            print(f"voxlm ({r['config']}): {r['ms_mean']:.2f} ms mean per step, "
                  f"p95 {r['ms_p95']:.2f} ms: goal {met}"
                  + ("" if args.text_card == 32000 else " (not the default text_card)"))


if __name__ == "__main__":
    main()
