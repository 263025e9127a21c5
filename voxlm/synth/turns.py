"""One speaker's speech out of corpora, as a monologue corpus: e.g. the assistant's voice of
`voxlm synth dialogues`, to train a voice decoder on (`voxlm codec train --decoder-codebooks`).

    voxlm synth turns --data data/qa --data data/corpus --speaker piper:joe --out data/voice

A dialogue row (one with "turns") gives each turn of `channel` whose speaker matches as an item:
that channel's samples from a little before the turn's start to a little after its end, its
words moved to the item's clock. A monologue row gives itself, whole, when its speaker matches.
Items keep their row's split, so held-out dialogues stay held out:

    OUT/audio/{row id}-{turn}.wav     16 kHz mono (monologue rows: OUT/audio/{row id}.wav)
    OUT/manifest.jsonl                one row per item; written last, atomically

Resumable: items already written are kept and not cut again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VoxlmError

BEFORE_S, AFTER_S = 0.15, 0.25  # seconds kept around a turn: onsets and releases


def channel_speaker(row: dict, channel: int) -> str:
    """The speaker of `channel` of a dialogue row ("user|assistant" speakers), or the row's."""
    speakers = str(row.get("speaker", "")).split("|")
    return speakers[channel] if "turns" in row and channel < len(speakers) else speakers[0]


def speaker_turns(corpora, out, speaker: str, channel: int = 1, progress: bool = True) -> Path:
    """Cut `speaker`'s speech out of the corpus folders `corpora` into the corpus folder `out`
    -> its manifest path. VoxlmError when no item of `speaker` is found."""
    import soundfile as sf
    from tqdm import tqdm

    from ..audio import load_audio, save_audio
    from ..data import read_manifest, write_manifest

    out = Path(out)
    plan = []  # (source folder, row, turn index or None)
    for corpus in map(Path, corpora):
        for row in read_manifest(corpus / "manifest.jsonl"):
            if "turns" in row:
                if channel_speaker(row, channel) == speaker:
                    plan += [(corpus, row, i) for i, t in enumerate(row["turns"])
                             if t.get("channel") == channel]
            elif channel_speaker(row, 0) == speaker:
                plan.append((corpus, row, None))
    if not plan:
        raise VoxlmError(f"no speech of {speaker!r} (channel {channel} of dialogues, or whole "
                         f"monologues) in {', '.join(map(str, corpora))}",
                         "pass the ENGINE:NAME the manifests' 'speaker' fields use, e.g. piper:joe")
    rows = []
    for corpus, row, turn in tqdm(plan, desc="turns", unit="item", disable=not progress):
        item_id = row["id"] if turn is None else f"{row['id']}-{turn}"
        target = out / "audio" / f"{item_id}.wav"
        if turn is None:
            start, end, text, words = 0.0, float(row["duration"]), row["text"], row["words"]
        else:
            t = row["turns"][turn]
            start, end = max(0.0, t["start"] - BEFORE_S), t["end"] + AFTER_S
            text, words = t["text"], t.get("words", [])
        if not target.exists():
            if turn is None:
                audio = load_audio(corpus / row["audio"])
            else:
                info = sf.info(str(corpus / row["audio"]))
                frames = sf.read(str(corpus / row["audio"]), dtype="float32", always_2d=True,
                                 start=round(start * info.samplerate),
                                 stop=min(info.frames, round(end * info.samplerate)))[0]
                if frames.shape[1] <= channel:
                    raise VoxlmError(f"{corpus / row['audio']} has {frames.shape[1]} channels, "
                                     f"and its turns name channel {channel}",
                                     "pass a dialogue corpus made by `voxlm synth dialogues`")
                audio = np.ascontiguousarray(frames[:, channel])
            save_audio(target, audio)
        duration = sf.info(str(target)).duration
        rows.append({"id": item_id, "audio": f"audio/{item_id}.wav", "duration": round(duration, 3),
                     "text": text, "speaker": speaker, "engine": speaker.split(":")[0],
                     "split": row["split"],
                     "words": [{"w": w["w"], "start": round(max(0.0, w["start"] - start), 3),
                                "end": round(max(0.0, w["end"] - start), 3)} for w in words]})
    return write_manifest(out / "manifest.jsonl", rows)
