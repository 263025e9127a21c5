"""Codec cost at 12.5 Hz against 25 Hz at the same bitrate (1.0 kbps), streaming, one thread.

    python benchmarks/codec_frame_rate.py
"""
import time
from dataclasses import replace

import torch

from voxlm.codec.model import Codec, codec_config


def main():
    torch.set_num_threads(1)
    base = codec_config("base")
    variants = [("12.5 Hz x 8 codebooks", replace(base, n_q=8)),
                ("25 Hz x 4 codebooks", replace(base, strides=(4,), n_q=4))]
    for name, config in variants:
        codec = Codec(config).eval()
        hop = config.hop
        audio = torch.randn(1, 1, 16000 * 12) * 0.1
        frames = torch.split(audio[..., : audio.shape[-1] // hop * hop], hop, dim=-1)
        best = float("inf")
        for _ in range(3):
            with codec.streaming(1):
                for frame in frames[:5]:
                    codec.decode(codec.encode(frame))
                start = time.perf_counter()
                for frame in frames[5:]:
                    codec.decode(codec.encode(frame))
                best = min(best, (time.perf_counter() - start) / (len(frames) - 5))
        print(f"{name}: {config.kbps():.2f} kbps, {best * 1e3:.2f} ms per {hop / 16:.0f} ms frame, "
              f"RTF {best / (hop / 16000):.3f}, {codec.num_parameters() / 1e6:.2f} M params")


if __name__ == "__main__":
    main()
