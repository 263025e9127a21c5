"""`voxlm data import`: real speech corpora, in the layouts they are published in, as voxlm corpus
folders (the format of `voxlm synth corpus` and `voxlm synth dialogues`, DESIGN.md 4).

    voxlm data import --format librispeech --src /corpora/LibriSpeech --out data/librispeech
    voxlm data import --format librilight --src /corpora/librilight/small --out data/librilight
    voxlm data import --format fisher --src /corpora/fisher --out data/fisher

--src is searched recursively, so the release's top folder or any folder inside it will do.

LibriSpeech (openslr.org/12): SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac, and in each
  chapter folder SPEAKER-CHAPTER.trans.txt with one `SPEAKER-CHAPTER-UTT TRANSCRIPT` line per
  utterance (upper case, no punctuation). The SUBSET folder gives the split: train-* -> train,
  dev-* -> valid, test-* -> test (any other name: train). Text is lower-cased.
LibriLight (github.com/facebookresearch/libri-light): SUBSET/SPEAKER/BOOK/NAME.flac, each with an
  optional NAME.json whose "voice_activity" is [[start, end], ...] in seconds. No transcripts:
  text "" and words [], so continuation only. Files are whole chapters (minutes to an hour); they
  are cut in pauses into pieces of at most --segment-seconds (the json's voice activity, else
  voxlm's energy gate `synth.align.speech_runs`). Split by speaker: ~1% valid, ~1% test.
Fisher English (LDC2004S13 / LDC2005S13 audio, LDC2004T19 / LDC2005T19 transcripts):
  .../NNN/fe_03_NNNNN.sph, two-channel 8 kHz mu-law NIST SPHERE, which libsndfile reads (a .wav of
  the same name is taken instead when present: decode shorten-compressed SPHERE, which libsndfile
  cannot read, with `sph2pipe -f wav IN.sph OUT.wav`), and anywhere under --src a transcript
  .../NNN/fe_03_NNNNN.txt of `START END A: words` lines (seconds; speaker A or B; '#' comments).
  Written as voxlm dialogues: stereo 16 kHz wav, channel 0 = A, channel 1 = B; every transcript
  segment is one turn {"channel", "start", "end", "text", "words", "kind": "turn"}; noise marks
  ([laughter], [noise], ...) dropped, ((uncertain words)) kept without the parentheses. Split by
  conversation: ~1% valid, ~1% test (speaker ids are in LDC's call tables, not read here, so the
  held-out splits are not speaker-disjoint). A conversation without a transcript is left out.

Word timings: no layout above has them. Where there is a transcript they are made with
`synth/align.py` (eSpeak NG speaks the text with exact word times, DTW carries them onto the real
audio; `align_words`). It does work on real speech, roughly (scripts/check_alignment.py): on
60 real human prompts (the Asterisk set: one speaker, 8 kHz, aligned as Fisher is, 0.5 s of
silence added either side) word starts lie a median 0.12 s from Whisper tiny.en's word
timestamps (72% within 0.2 s, 90% within 0.37 s), about Whisper's own median error on eSpeak
speech with exact times (0.11 s); ours run early on average (-0.06 s against Whisper). Not
checked on full-band read speech (LibriSpeech) nor on conversation. Fisher words are aligned
inside their transcript segment, against a telephone-band reference. Each row says what it got:
"word_timings": "dtw", or "none" with words [] (no transcript, --no-align, nothing eSpeak can
say, or over MAX_ALIGN_SECONDS). The aligned and duplex layouts leave items without timings out,
interleave keeps them as speech only, and all three refuse a tokens folder with none
(lm/data.py); continuation needs none.

OUT (resumable as `voxlm synth corpus` is: every file atomic; a unit's sidecar is written last):
    import.json        format, src and options; a resume must use the same (--limit, --workers may change)
    audio/.../NAME.wav 16 kHz mono (stereo for Fisher), in per-speaker (Fisher: per-NNN) folders
    audio/.../NAME.json the sidecar of one source file (a "unit"): its manifest rows
    manifest.jsonl     the rows of every finished unit, in source order
    skipped.jsonl      units that could not be imported this run (unreadable audio ...), and why
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from .audio import SAMPLE_RATE, load_audio, resample, save_audio
from .data import check_row, file_mode, write_json, write_manifest
from .errors import VoxlmError

FORMATS = ("librispeech", "librilight", "fisher")
SOURCE_MAX_SECONDS = 4 * 3600.0  # longest source file read (LibriLight chapters can pass an hour)
MAX_ALIGN_SECONDS = 120.0  # DTW holds an [N, M] matrix of 10 ms frames: 12k x 12k at most
HELD_OUT_SHARE = 0.01  # share of speakers (LibriLight) or conversations (Fisher) in valid, and in test
PAD_SECONDS = 0.25  # pause kept either side of a LibriLight piece; Fisher segments aligned with it
LIBRISPEECH_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
FISHER_LINE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s+(\d+(?:\.\d*)?)\s+([AB])\s*:(.*)$")
LAYOUT_HELP = {
    "librispeech": "a LibriSpeech folder: SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac with "
                   "SPEAKER-CHAPTER.trans.txt beside them",
    "librilight": "a LibriLight folder: SUBSET/SPEAKER/BOOK/NAME.flac (NAME.json optional)",
    "fisher": "a Fisher folder: .../NNN/fe_03_NNNNN.sph (two channels, 8 kHz) and the LDC "
              "transcripts .../NNN/fe_03_NNNNN.txt ('START END A: words' lines) under it",
}


class ImportResult(NamedTuple):
    manifest: Path  # OUT/manifest.jsonl
    items: int  # manifest rows (utterances, pieces or conversations)
    units: int  # source files imported (in total, with earlier runs)
    imported: int  # source files imported by this call
    skipped: list  # [(unit key, reason)] left out by this call
    hours: float  # audio in the manifest
    seconds: float  # wall time of this call
    note: str  # what the layout held that was left out ("" if nothing)


# ---------------------------------------------------------------- small helpers

def _safe(name: str) -> str:
    """A path component or id part without slashes, spaces or a leading dot."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".") or "_"


def hashed_split(key: str, share: float = HELD_OUT_SHARE) -> str:
    """'valid' for about `share` of keys, 'test' for as many, else 'train'; fixed per key."""
    x = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "valid" if x < share else "test" if x < 2 * share else "train"


def align_words(audio, text: str, offset: float = 0.0, narrowband: bool = False):
    """[{"w", "start", "end"}] of `text` in `audio` ([T] 16 kHz) by DTW against eSpeak NG, times
    shifted by `offset` seconds; None when it cannot be done (no words, too long, unspeakable).
    The audio is cut to its speech (+- 50 ms) first, as the reference is: DTW pins both ends.
    narrowband: the audio was 8 kHz (telephone), so the reference is band-limited the same way."""
    from .synth.align import speech_runs, transfer_timings
    from .synth.engines import espeak_speech, text_words

    runs = speech_runs(audio) if len(audio) else []
    if not text_words(text) or not runs:
        return None
    lo, hi = max(0.0, runs[0][0] - 0.05), runs[-1][1] + 0.05
    audio, offset = audio[int(lo * SAMPLE_RATE): int(hi * SAMPLE_RATE)], offset + lo
    if len(audio) / SAMPLE_RATE > MAX_ALIGN_SECONDS:
        return None
    try:
        reference, words = espeak_speech(text)
    except VoxlmError:
        return None
    if narrowband:
        reference = resample(resample(reference, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    return [{"w": w.w, "start": round(w.start + offset, 3), "end": round(w.end + offset, 3)}
            for w in transfer_timings(reference, words, audio)]


def pieces(runs: list, total: float, max_seconds: float, pad: float = PAD_SECONDS) -> list:
    """Cut a long recording in its pauses: speech runs [(start, end)] seconds -> [(start, end)]
    pieces of at most `max_seconds`, each its runs plus up to `pad` of pause either side (never
    into the next piece); a run longer than a piece is cut into equal parts."""
    room = max_seconds - 2 * pad
    spans = []
    for start, end in sorted((max(0.0, s), min(total, e)) for s, e in runs):
        if end <= start:
            continue
        if spans and end - spans[-1][0] <= room:
            spans[-1] = (spans[-1][0], end)
            continue
        parts = max(1, -int(-(end - start) // room))
        step = (end - start) / parts
        spans += [(start + k * step, start + (k + 1) * step) for k in range(parts)]
    out = []
    for k, (start, end) in enumerate(spans):
        before = spans[k - 1][1] if k else 0.0
        after = spans[k + 1][0] if k + 1 < len(spans) else total
        out.append((round(max(start - pad, (before + start) / 2, 0.0), 3),
                    round(min(end + pad, (end + after) / 2, total), 3)))
    return out


def _voice_activity(path: Path, total: float):
    """LibriLight's [[start, end], ...] seconds from NAME.json, or None."""
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["voice_activity"]
        runs = [(float(s), float(e)) for s, e in runs]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [r for r in runs if 0 <= r[0] < r[1] <= total + 1.0] or None


def clean_fisher_text(text: str) -> str:
    """Fisher transcript words as spoken: [noise marks] dropped, ((uncertain)) parentheses off."""
    text = re.sub(r"\[\[[^\]]*\]\]|\[[^\]]*\]", " ", text)
    return " ".join(text.replace("((", " ").replace("))", " ").split())


# ---------------------------------------------------------------- planning: the source units

def _src(src) -> Path:
    src = Path(src)
    if not src.exists():
        raise VoxlmError(f"{src}: no such folder", "pass --src the folder that holds the corpus")
    if not src.is_dir():
        raise VoxlmError(f"{src}: not a folder", "pass --src the folder that holds the corpus")
    return src


def plan_librispeech(src: Path) -> list:
    units = []
    for trans in sorted(src.rglob("*.trans.txt")):
        chapter = trans.name[: -len(".trans.txt")]
        subset = next((p for p in trans.relative_to(src).parts[::-1]
                       if re.match(r"(train|dev|test)-", p)), "train-")
        split = LIBRISPEECH_SPLITS[subset.split("-")[0]]
        lines = trans.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not re.fullmatch(r"\d+-\d+-\d+", uid) or not uid.startswith(chapter + "-"):
                raise VoxlmError(f"{trans}:{n}: not '{chapter}-UTT TRANSCRIPT'",
                                 "repair or re-download this transcript file")
            speaker, book, _ = uid.split("-")
            units.append({"key": uid, "path": str(trans.parent / f"{uid}.flac"),
                          "out": f"{speaker}/{book}/{uid}", "text": " ".join(text.lower().split()),
                          "speaker": f"librispeech:{speaker}", "split": split})
    return units


def plan_librilight(src: Path) -> list:
    units = []
    for flac in sorted(src.rglob("*.flac")):
        speaker, book = _safe(flac.parent.parent.name), _safe(flac.parent.name)
        key = f"{speaker}-{book}-{_safe(flac.stem)}"
        units.append({"key": key, "path": str(flac), "out": f"{speaker}/{book}/{_safe(flac.stem)}",
                      "vad": str(flac.with_suffix(".json")), "speaker": f"librilight:{speaker}",
                      "split": hashed_split(f"librilight:{speaker}")})
    return units


def read_fisher_transcript(path: Path) -> list:
    """[(start, end, channel, text)] of one Fisher transcript, in file order; empty segments
    (noise marks only) left out."""
    segments = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = FISHER_LINE.match(line)
        if not match or float(match[2]) < float(match[1]):
            raise VoxlmError(f"{path}:{n}: not 'START END A: words' (START <= END, speaker A or B)",
                             "repair or re-download this transcript file")
        text = clean_fisher_text(match[4])
        if text:
            segments.append((float(match[1]), float(match[2]), "AB".index(match[3]), text))
    return segments


def plan_fisher(src: Path) -> tuple:
    """-> (units, conversations without a transcript)."""
    audio = {}
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() in (".sph", ".wav") and path.is_file():
            if path.suffix.lower() == ".wav" or path.stem not in audio:  # a decoded .wav wins
                audio[path.stem] = path
    if not audio:
        return [], 0
    transcripts = {p.stem: p for p in src.rglob("*.txt") if p.stem in audio}
    units = []
    for stem, path in sorted(audio.items()):
        if stem in transcripts:
            key = _safe(stem)
            units.append({"key": key, "path": str(path), "out": f"{_safe(path.parent.name)}/{key}",
                          "segments": read_fisher_transcript(transcripts[stem]),
                          "speaker": f"fisher:{key}:A|fisher:{key}:B",
                          "split": hashed_split(f"fisher:{key}")})
    return units, len(audio) - len(units)


def plan(fmt: str, src) -> tuple:
    """The source units of a corpus in a fixed order -> (units, note on what was left out)."""
    if fmt not in FORMATS:
        raise VoxlmError(f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    src = _src(src)
    note = ""
    if fmt == "librispeech":
        units = plan_librispeech(src)
    elif fmt == "librilight":
        units = plan_librilight(src)
    else:
        units, untranscribed = plan_fisher(src)
        if untranscribed and not units:
            raise VoxlmError(f"{src}: none of its {untranscribed} conversations has a transcript "
                             "(.txt of the same name)", "put the LDC transcripts under --src too")
        note = (f"{untranscribed} conversation(s) without a transcript left out"
                if untranscribed else "")
    if not units:
        found = {"librispeech": "*.trans.txt transcripts", "librilight": ".flac files",
                 "fisher": ".sph files"}[fmt]
        raise VoxlmError(f"{src}: no {found} under it", f"pass --src {LAYOUT_HELP[fmt]}")
    return units, note


# ---------------------------------------------------------------- one unit (in a worker)

def _row(unit: dict, item_id: str, audio: str, seconds: float, text: str, words, fmt: str,
         extra: dict | None = None) -> dict:
    row = {"id": item_id, "audio": audio, "duration": round(seconds, 3), "text": text,
           "words": words or [], "speaker": unit["speaker"], "engine": "real",
           "split": unit["split"], "source": fmt, "word_timings": "dtw" if words else "none",
           **(extra or {})}
    return check_row(row, f"{fmt} {item_id}")


def _librispeech(unit, audio, out, options) -> list:
    name = f"{unit['out']}.{options['audio_format']}"
    save_audio(out / "audio" / name, audio)
    words = align_words(audio, unit["text"]) if options["align"] else None
    return [_row(unit, unit["key"], f"audio/{name}", len(audio) / SAMPLE_RATE, unit["text"],
                 words, "librispeech")]


def _librilight(unit, audio, out, options) -> list:
    from .synth.align import speech_runs

    total = len(audio) / SAMPLE_RATE
    runs = _voice_activity(Path(unit["vad"]), total) or speech_runs(audio)
    rows = []
    for k, (start, end) in enumerate(pieces(runs, total, options["segment_seconds"])):
        piece = audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]
        if len(piece) < SAMPLE_RATE // 10:
            continue
        name = f"{unit['out']}-{k:04d}.{options['audio_format']}"
        save_audio(out / "audio" / name, piece)
        rows.append(_row(unit, f"{unit['key']}-{k:04d}", f"audio/{name}", len(piece) / SAMPLE_RATE,
                         "", None, "librilight", {"offset": start}))
    return rows


def _fisher(unit, audio, out, options) -> list:
    if audio.ndim != 2 or audio.shape[1] != 2:
        raise VoxlmError(f"{unit['path']}: {audio.shape[-1] if audio.ndim == 2 else 1} channel(s)",
                         "Fisher conversations have two (A and B)")
    total = len(audio) / SAMPLE_RATE
    segments = [(min(s, total), min(e, total), c, t) for s, e, c, t in unit["segments"]]
    turns, words = [], []
    for k, (start, end, channel, text) in enumerate(segments):
        aligned = None
        if options["align"] and end > start:  # padded, but not into this speaker's next words
            lo = max([0.0, start - PAD_SECONDS] + [e for s, e, c, _ in segments[:k]
                                                   if c == channel and e <= start])
            hi = min([total, end + PAD_SECONDS] + [s for s, e, c, _ in segments[k + 1:]
                                                   if c == channel and s >= end])
            clip = audio[int(lo * SAMPLE_RATE): int(hi * SAMPLE_RATE), channel]
            aligned = align_words(clip, text, offset=lo, narrowband=True)
        turn_words = aligned or []
        turns.append({"channel": channel, "start": round(start, 3), "end": round(end, 3),
                      "text": text, "words": turn_words, "kind": "turn", "interrupted": False})
        words += [{**w, "channel": channel} for w in turn_words]
    words.sort(key=lambda w: (w["start"], w["channel"]))
    name = f"{unit['out']}.wav"
    save_audio(out / "audio" / name, audio)
    text = "\n".join(f"{'AB'[t['channel']]}: {t['text']}" for t in turns)
    return [_row(unit, unit["key"], f"audio/{name}", total, text, words, "fisher",
                 {"turns": turns, "channel_speakers": ["A", "B"]})]


def import_unit(job: tuple) -> tuple:
    """Import one source file: write its audio, then its sidecar (its manifest rows). -> (key,
    "") or (key, reason) when its audio cannot be read (no sidecar then: a re-run tries again)."""
    unit, fmt, out, options = job
    out = Path(out)
    path = Path(unit["path"])
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
        if path.suffix.lower() == ".sph" and b"shorten" in head:
            raise VoxlmError(f"{path}: shorten-compressed SPHERE, which libsndfile cannot read",
                             "decode it first: sph2pipe -f wav IN.sph IN.wav")
        audio = load_audio(path, max_seconds=SOURCE_MAX_SECONDS, mono=fmt != "fisher")
        rows = {"librispeech": _librispeech, "librilight": _librilight, "fisher": _fisher}[fmt](
            unit, audio, out, options)
    except (VoxlmError, FileNotFoundError, IsADirectoryError) as exc:
        if isinstance(exc, OSError):
            exc = VoxlmError(f"{path}: {exc.strerror}", "check the path")
        return unit["key"], str(exc)
    write_json(sidecar(out, unit), {"key": unit["key"], "rows": rows})
    return unit["key"], ""


def sidecar(out: Path, unit: dict) -> Path:
    return Path(out) / "audio" / f"{unit['out']}.json"


# ---------------------------------------------------------------- the corpus

def _check_out(out: Path, saved: dict):
    if out.exists() and not out.is_dir():
        raise VoxlmError(f"{out}: exists and is not a folder", "pass a new or import folder to --out")
    path = out / "import.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            return  # never written whole by write_json; rewrite it
        if old != saved:
            raise VoxlmError(f"{out}: holds a {old.get('format')} import of {old.get('src')} with "
                             "other options", "use a new --out folder, or the same --format, "
                             "--src and options to resume")
    elif out.is_dir() and any(out.iterdir()):
        raise VoxlmError(f"{out}: not empty and not an import folder", "pass a new --out folder")


def import_corpus(fmt: str, src, out, limit: int = 0, workers: int = 2, align: bool = True,
                  segment_seconds: float = 30.0, audio_format: str = "wav",
                  progress: bool = True) -> ImportResult:
    """Import the corpus at `src` (layout `fmt`, one of FORMATS) into the voxlm corpus folder
    `out`. limit: the first N source files only (0: all); workers: processes (0 or 1: this one);
    align: word timings by DTW where there is a transcript; segment_seconds: longest LibriLight
    piece; audio_format: wav or flac (mono outputs; Fisher is always stereo wav). Resumable: a
    source file whose sidecar exists is not imported again."""
    from tqdm import tqdm

    began = time.time()
    if limit < 0:
        raise VoxlmError(f"--limit {limit}", "pass 0 (all) or a number of source files")
    if not 1.0 <= segment_seconds <= MAX_ALIGN_SECONDS:
        raise VoxlmError(f"--segment-seconds {segment_seconds}",
                         f"pass a length from 1 to {MAX_ALIGN_SECONDS:g} seconds, e.g. 30")
    if audio_format not in ("wav", "flac"):
        raise VoxlmError(f"audio format {audio_format!r}", "choose wav or flac")
    out = Path(out)
    options = {"align": bool(align), "segment_seconds": float(segment_seconds),
               "audio_format": audio_format}
    saved = {"format": fmt, "src": str(Path(src).resolve()), "options": options}
    units, note = plan(fmt, src)
    _check_out(out, saved)
    units = units[:limit] if limit else units
    keys = [u["key"] for u in units]
    if len(set(keys)) != len(keys):
        raise VoxlmError(f"{src}: two source files give one id ({_first_repeat(keys)})",
                         "keep one copy of each file under --src")
    out.mkdir(parents=True, exist_ok=True)
    for temp in out.rglob(".*.tmp"):  # temp files of a killed run
        temp.unlink(missing_ok=True)
    write_json(out / "import.json", saved)
    done = {u["key"] for u in units if sidecar(out, u).is_file()}
    todo = [u for u in units if u["key"] not in done]
    jobs = [(unit, fmt, str(out), options) for unit in todo]
    skipped = []
    bar = tqdm(total=len(units), initial=len(done), unit="file", disable=not progress,
               desc=f"import {fmt}")
    with contextlib.ExitStack() as stack:
        results = map(import_unit, jobs)
        if len(jobs) > 1 and workers > 1:
            import multiprocessing as mp

            pool = stack.enter_context(mp.get_context("spawn").Pool(min(workers, len(jobs))))
            results = pool.imap_unordered(import_unit, jobs, chunksize=4)
        for key, reason in results:
            if reason:
                skipped.append((key, reason))
            else:
                done.add(key)
            bar.update(1)
    bar.close()
    write_manifest(out / "skipped.jsonl", [{"key": k, "reason": r} for k, r in skipped])
    items, seconds = write_rows(out / "manifest.jsonl", [sidecar(out, u) for u in units
                                                         if u["key"] in done])
    if not items and skipped and len(skipped) == len(todo):
        raise VoxlmError(f"{src}: none of its {len(skipped)} audio files could be read (the "
                         f"first: {skipped[0][1].split('; ')[0]})", "check or re-download them; "
                         f"every reason is in {out / 'skipped.jsonl'}")
    if not items:
        raise VoxlmError(f"{src}: no speech found to import", f"pass --src {LAYOUT_HELP[fmt]}")
    return ImportResult(out / "manifest.jsonl", items, sum(k in done for k in keys),
                        len(todo) - len(skipped), skipped, seconds / 3600, time.time() - began, note)


def write_rows(path: Path, sidecars: list) -> tuple:
    """The rows of `sidecars`, in order, as a manifest, atomically and without holding them all
    (LibriSpeech's 281k rows with their words are gigabytes as Python objects). -> (rows,
    seconds of audio); an empty manifest is removed instead."""
    items, seconds = 0, 0.0
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            for side in sidecars:
                for row in json.loads(side.read_text(encoding="utf-8"))["rows"]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    items, seconds = items + 1, seconds + row["duration"]
            f.flush()
            os.fsync(f.fileno())
        if items:
            os.chmod(temp, file_mode())
            os.replace(temp, path)
        else:
            path.unlink(missing_ok=True)
    finally:
        Path(temp).unlink(missing_ok=True)
    return items, seconds


def _first_repeat(keys: list) -> str:
    seen = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""
