"""How close `importers.align_words` (eSpeak DTW) comes on real speech, the figures quoted in
voxlm/importers.py. Needs the Asterisk prompts (`voxlm synth realset`'s Debian packages) and
faster-whisper (the eval extra); about 3 minutes on one core.

    python scripts/check_alignment.py [--prompts 60]

Real speech has no exact word times, so Whisper tiny.en's word timestamps stand in for them, and
Whisper's own error is measured where exact times exist: eSpeak speech in other voices.
"""
import argparse
import re

import numpy as np
import torch


def main():
    from faster_whisper import WhisperModel

    from voxlm.audio import load_audio
    from voxlm.codec.teacher import whisper_model_dir
    from voxlm.importers import align_words
    from voxlm.synth.engines import espeak_speech
    from voxlm.synth.realset import SOUNDS_DIR, TRANSCRIPTS, prompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=60, help="prompts of 6 words or more")
    args = parser.parse_args()
    torch.set_num_threads(1)
    whisper = WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=1)

    def norm(word):
        return re.sub(r"[^a-z0-9']", "", word.lower())

    def whisper_words(audio):
        segments, _ = whisper.transcribe(audio, language="en", beam_size=5, word_timestamps=True,
                                         condition_on_previous_text=False)
        return [(norm(w.word), w.start) for s in segments for w in s.words]

    def start_errors(ours, theirs):  # ours - theirs for words matched in order by spelling
        out, j = [], 0
        for word, start in ours:
            for k in range(j, min(j + 3, len(theirs))):
                if theirs[k][0] == norm(word):
                    out.append(start - theirs[k][1])
                    j = k + 1
                    break
        return out

    items = [p for p in prompts(SOUNDS_DIR, TRANSCRIPTS) if len(p[2].split()) >= 6][: args.prompts]
    pad = np.zeros(8000, np.float32)  # 0.5 s of silence either side, as a loose segment
    real, exact = [], []
    for _, wav, text in items:
        audio = np.concatenate([pad, load_audio(wav), pad])  # 8 kHz telephone prompts, at 16 kHz
        ours = [(w["w"], w["start"]) for w in align_words(audio, text, narrowband=True)]
        real += start_errors(ours, whisper_words(audio))
        audio, words = espeak_speech(text, "en-gb-scotland+f1", rate=1.15, pitch=1.2)
        exact += start_errors([(w.w, w.start) for w in words], whisper_words(audio))
    real, exact = np.array(real), np.array(exact)
    print(f"{len(items)} Asterisk prompts, {len(real)} words: DTW start - Whisper start: median "
          f"|x| {np.median(abs(real)):.3f} s, mean {real.mean():+.3f} s, within 0.2 s "
          f"{(abs(real) < 0.2).mean():.0%}, 90th percentile |x| {np.percentile(abs(real), 90):.2f} s")
    print(f"Whisper's own error on eSpeak speech with exact times ({len(exact)} words): median "
          f"|x| {np.median(abs(exact)):.3f} s, mean exact - Whisper {exact.mean():+.3f} s")


if __name__ == "__main__":
    main()
