"""python benchmarks/lm_throughput.py [--config base] [--batch-size 4] [--seq-len 128] [--steps 5]
    [--dtype fp32|bf16|both]

LM training throughput and model FLOPs utilisation (MFU) on this machine's CPU, against a matmul
peak measured in the same run with the same threads and dtype:

  peak   the best of several square matmuls (2048 x 2048 by default) in that dtype, FLOP/s
  step   forward + backward + AdamW on random tokens shaped like a training batch [B, S, T];
         bf16: under torch.autocast (what `voxlm lm train --bf16` does), weights kept in fp32
  FLOPs  counted by torch.utils.flop_counter over one forward + backward (matmuls, attention),
         so MFU = counted FLOPs per step / step time / peak

The text vocabulary matters: a 262k-id Gemma text head dominates a small model's FLOPs.
`--text-card` sets it (32000 by default, as the preset). Prints one markdown row per run.
"""
from __future__ import annotations

import argparse
import time

import torch


def matmul_peak(size: int, repeats: int = 8, dtype=torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def main():
    from torch.utils.flop_counter import FlopCounterMode

    from voxlm.lm.model import LM, lm_config, lm_loss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="base")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--text-card", type=int, default=0, help="0: the preset's")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="fp32",
                        help="both: fp32, then bf16 autocast, same model and batch, one run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = lm_config(args.config)
    if args.text_card:
        config.text_card = args.text_card
    torch.manual_seed(0)
    lm = LM(config)
    params = sum(p.numel() for p in lm.parameters())
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    highs = torch.tensor([config.text_card] + [config.card] * (config.n_streams - 1))
    tokens = (torch.rand(args.batch_size, config.n_streams, args.seq_len) * highs[None, :, None]).long()

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = lm_loss(lm(tokens), tokens)["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        loss = lm_loss(lm(tokens), tokens)["total"]
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    frames = args.batch_size * args.seq_len
    print("| config | params | text ids | batch x frames | threads | dtype | s/step | frames/s "
          "| tokens/s | GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s (dtype) | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        bf16 = name == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        step(bf16)  # warm-up
        peak_before = matmul_peak(args.peak_size, dtype=dtype)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step(bf16)
            times.append(time.perf_counter() - start)
        peak = max(peak_before, matmul_peak(args.peak_size, dtype=dtype))
        seconds = sorted(times)[len(times) // 2]
        print(f"| {args.config} | {params / 1e6:.1f} M | {config.text_card} | {args.batch_size} x "
              f"{args.seq_len} | {torch.get_num_threads()} | {name} | {seconds:.3f} | "
              f"{frames / seconds:.0f} | {frames * config.n_streams / seconds:.0f} | "
              f"{flops / 1e9:.1f} | {flops / seconds / 1e9:.1f} | {peak / 1e9:.1f} | "
              f"{flops / seconds / peak:.0%} |")


if __name__ == "__main__":
    main()
