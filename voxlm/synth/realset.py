"""A small set of real human speech for evaluation: the Asterisk telephony prompts.

Debian's asterisk-core-sounds-en-wav holds about 360 prompts spoken by one person (Allison
Smith, 8 kHz wav) and asterisk-core-sounds-en their transcripts, one "name: Transcript." line
each. `build_realset` turns them into a voxlm corpus folder:

    OUT/audio/{name}.wav   16 kHz mono (names may hold a folder: digits/1, letters/a)
    OUT/manifest.jsonl     one row per prompt, split "test", no word timings (words: [])

Only prompts with a spoken transcript are kept: entries that are all markup ("[ascending
tones]", "(1 second of silence)", "<beep ascending>") or that have no wav are skipped.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

from ..errors import VoxlmError

SOUNDS_DIR = "/usr/share/asterisk/sounds/en"
TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-wav"
SPEAKER = "asterisk:allison"
MARKUP = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")  # [tones], (notes), <beeps>: not spoken
KEYS = {"*": " star ", "#": " pound "}  # phone keys as the prompts say them


def read_transcripts(path) -> dict:
    """{name: raw transcript} from the 'name: Transcript.' lines ('; ' lines are comments)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError) as exc:
        raise VoxlmError(f"{path}: cannot read the prompt transcripts ({exc}); reinstall them "
                         f"with `sudo apt-get install --reinstall {PACKAGES}`") from None
    out = {}
    for line in lines:
        name, sep, text = line.partition(":")
        if sep and not line.startswith(";") and re.fullmatch(r"[\w./-]+", name.strip()):
            out[name.strip()] = text.strip()
    return out


def spoken_transcript(raw: str) -> str:
    """What the speaker says: markup dropped, phone keys spelled out, then text.spoken; '' when
    nothing spoken is left."""
    from .text import spoken

    text = MARKUP.sub(" ", raw)
    for key, word in KEYS.items():
        text = text.replace(key, word)
    text = spoken(text)
    return text if re.search(r"[A-Za-z]", text) else ""


def prompts(sounds_dir, transcripts) -> list:
    """[(name, wav path, spoken text)] for every prompt that has both a wav and spoken words."""
    sounds_dir, transcripts = Path(sounds_dir), Path(transcripts)
    if not sounds_dir.is_dir() or not any(sounds_dir.glob("*.wav")):
        raise VoxlmError(f"{sounds_dir}: no Asterisk prompt wavs found; install them with "
                         f"`sudo apt-get install {PACKAGES}`")
    if not transcripts.is_file():
        raise VoxlmError(f"{transcripts}: no Asterisk prompt transcripts found; install them "
                         f"with `sudo apt-get install {PACKAGES}`")
    out = []
    for name, raw in read_transcripts(transcripts).items():
        wav = sounds_dir / f"{name}.wav"
        text = spoken_transcript(raw)
        if text and wav.is_file() and ".." not in Path(name).parts:
            out.append((name, wav, text))
    if not out:
        raise VoxlmError(f"{transcripts}: no transcript matches a wav in {sounds_dir}; "
                         f"reinstall with `sudo apt-get install --reinstall {PACKAGES}`")
    return out


def build_realset(out_dir, sounds_dir=SOUNDS_DIR, transcripts=TRANSCRIPTS,
                  limit: int | None = None) -> Path:
    """Write the real-speech test set to out_dir; return the manifest path.

    Resumable: wavs already in OUT/audio are kept (and only read for their duration).
    """
    from tqdm import tqdm

    from ..audio import SAMPLE_RATE, load_audio, save_audio
    from ..data import write_manifest

    out_dir = Path(out_dir)
    items = prompts(sounds_dir, transcripts)[: limit if limit is not None else None]
    rows = []
    for name, wav, text in tqdm(items, desc="asterisk prompts", unit="file", leave=False):
        rel = Path("audio") / f"{name}.wav"
        dst = out_dir / rel
        if dst.is_file():
            audio = load_audio(dst)  # [T] 16 kHz
        else:
            audio = load_audio(wav)  # 8 kHz on disk, [T] 16 kHz here
            save_audio(dst, audio)
        rows.append({"id": "asterisk-" + name.replace("/", "-"), "audio": rel.as_posix(),
                     "duration": round(len(audio) / SAMPLE_RATE, 3), "text": text, "words": [],
                     "speaker": SPEAKER, "engine": "real", "split": "test", "source": "asterisk"})
    return write_manifest(out_dir / "manifest.jsonl", rows)
