"""python benchmarks/word_timing.py

Accuracy of the DTW word aligner (synth/align.py) where the truth is known: eSpeak NG reports
exact word positions, so timings carried from the `en-us` voice onto other eSpeak voices at
other speaking rates can be checked boundary by boundary.
"""
from __future__ import annotations

import numpy as np

from voxlm.synth import align
from voxlm.synth.engines import espeak_speech

TEXTS = ["One, two, three. The quick brown fox jumps over the lazy dog. I like green apples.",
         "What is seven plus five? Seven plus five is twelve.",
         "I would binge watch just about every tv show, after a long day at work.",
         "Haha, well this is always awkward. How are you doing today?"]
VOICES = ("en+f3", "en-gb-scotland+m4", "en-029+f4", "en-us+Andy")
RATES = (0.85, 1.2)


def main():
    errors = []
    for text in TEXTS:
        reference, ref_words = espeak_speech(text, "en-us")
        for voice in VOICES:
            for rate in RATES:
                target, truth = espeak_speech(text, voice, rate=rate)
                got = align.transfer_timings(reference, ref_words, target)
                errors += [abs(g.start - t.start) for g, t in zip(got, truth)]
                errors += [abs(g.end - t.end) for g, t in zip(got, truth)]
    errors = np.array(errors)
    print(f"{len(errors)} boundaries: mean error {1000 * errors.mean():.1f} ms, median "
          f"{1000 * np.median(errors):.1f} ms, {100 * (errors < 0.05).mean():.1f} % within 50 ms")


if __name__ == "__main__":
    main()
