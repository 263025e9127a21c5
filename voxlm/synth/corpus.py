"""`voxlm synth corpus`: a multi-voice monologue corpus with word timings, resumable.

Item i of a corpus is a pure function of (seed, i): its text, voice, speaking rate, pitch and
augmentation are drawn from `random.Random(f"{seed}:{i}")`. Workers write `audio/{id}.wav` and
then `audio/{id}.json` (both atomic), so a killed run leaves whole items only; a re-run skips ids
whose .json exists and the manifest is rebuilt from the sidecars in id order: no duplicates, no
holes. Splits are speaker-disjoint and the same as in dialogues (`engines.voice_split`): each
engine with three or more voices gives one voice to `valid` and one to `test`; festival voices
(held out) are always `test`.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, normalize_loudness, save_audio
from ..data import remove_stale_temps, write_json, write_manifest
from ..errors import VoxlmError
from . import engines as E

# shares of items per engine: set by speed (kokoro ~0.8x real time, piper ~3x, flite ~20x, espeak
# ~100x on one core) so the mixed corpus is made at 10x real time or more on 2 cores
ENGINE_WEIGHTS = {"espeak": 0.45, "flite": 0.38, "piper": 0.12, "kokoro": 0.05, "festival": 0.2}
SOURCE_WEIGHTS = {"chitchat": 0.6, "qa": 0.4, "file": 1.0}
EST_ITEM_SECONDS = 4.0  # first guess of an item's length, to size the first batch


@dataclass
class CorpusConfig:
    minutes: float = 10.0  # audio to generate, in minutes
    engines: tuple = ("espeak", "flite", "piper", "kokoro")  # festival only for held-out sets
    voices: int | None = None  # use this many voices, spread over the engines (None: all)
    sources: tuple = ("chitchat", "qa")  # text sources; "file" is added by text_files
    text_files: tuple = ()  # extra UTF-8 text files, one utterance per line
    rate_range: tuple = (0.85, 1.2)  # speaking-rate factor range
    pitch_range: tuple = (0.8, 1.25)  # pitch factor range (espeak; others via augmentation)
    augment: float = 0.3  # share of items augmented (speed, pitch, noise, reverb, telephone)
    loudness_db: tuple = (-28.0, -18.0)  # RMS level range of the written audio, dBFS
    seed: int = 0
    workers: int = 2
    engine_weights: dict = field(default_factory=lambda: dict(ENGINE_WEIGHTS))


def choose_voices(config: CorpusConfig) -> list:
    """The corpus's voices: all of the chosen engines', or `config.voices` of them, taken
    round-robin across engines so every engine is represented. Within an engine the order is a
    train voice, then its test and valid voices (E.voice_split), then the other train voices, so
    a corpus of a few voices per engine still holds out speakers."""
    for name in config.engines:
        if name not in E.TRAINING_ENGINES + E.HELD_OUT_ENGINES:
            raise VoxlmError(f"unknown engine '{name}'; choose from "
                             f"{', '.join(E.TRAINING_ENGINES + E.HELD_OUT_ENGINES)}")
    per_engine = [E.get_engine(name).voices() for name in config.engines]
    if config.voices is None:
        return [v for vs in per_engine for v in vs]
    if config.voices < 1:
        raise VoxlmError(f"--voices {config.voices} selects no voices",
                         "pass at least one voice, or leave it out for all")
    rank = {"test": 1, "valid": 2}
    ordered = []
    for vs in per_engine:
        train = [v for v in vs if E.voice_split(v) == "train"]
        held = sorted((v for v in vs if E.voice_split(v) != "train"), key=lambda v: rank[E.voice_split(v)])
        ordered.append(train[:1] + held + train[1:])
    out, k = [], 0
    while len(out) < config.voices and any(k < len(vs) for vs in ordered):
        out += [vs[k] for vs in ordered if k < len(vs)][: config.voices - len(out)]
        k += 1
    return out


@dataclass
class ItemPlan:
    id: str
    voice: E.Voice
    split: str
    text: str
    source: str
    rate: float
    pitch: float
    augment: object  # augment.Augment or None
    loudness_db: float


class Planner:
    """Decides item i's content; holds the text pools (loaded once per process)."""

    def __init__(self, config: CorpusConfig):
        from . import text

        self.config = config
        self.voices = choose_voices(config)
        self.splits = {v.id: E.voice_split(v) for v in self.voices}
        self.pools = {}
        if "chitchat" in config.sources:
            self.pools["chitchat"] = text.chitchat_utterances()
        if "qa" in config.sources:
            self.pools["qa"] = None  # generated per item
        lines = [line for f in config.text_files for line in text.text_file_lines(f)]
        if lines:
            self.pools["file"] = lines
        if not self.pools:
            raise VoxlmError("no text sources; use --sources chitchat,qa or pass --text FILE")

    def plan(self, index: int) -> ItemPlan:
        from . import augment, text

        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{index}")
        engines = sorted({v.engine for v in self.voices})
        engine = rng.choices(engines, weights=[cfg.engine_weights.get(e, 0.2) for e in engines])[0]
        voice = rng.choice([v for v in self.voices if v.engine == engine])
        names = sorted(self.pools)
        source = rng.choices(names, weights=[SOURCE_WEIGHTS[n] for n in names])[0]
        if source == "qa":
            utterance = rng.choice(text.qa_pair(rng))
        else:
            utterance = rng.choice(self.pools[source])
        aug = (augment.random_augment(np.random.default_rng(rng.getrandbits(32)), 1.0)
               if rng.random() < cfg.augment else None)
        return ItemPlan(id=f"{index:07d}", voice=voice, split=self.splits[voice.id],
                        text=utterance, source=source, rate=round(rng.uniform(*cfg.rate_range), 3),
                        pitch=round(rng.uniform(*cfg.pitch_range), 3), augment=aug,
                        loudness_db=round(rng.uniform(*cfg.loudness_db), 1))


_worker: dict = {}


def _init_worker(config: CorpusConfig, out: str):
    _worker["planner"] = Planner(config)
    _worker["engines"] = {}
    _worker["out"] = Path(out)


def make_item(index: int) -> dict:
    """Synthesize item `index` into OUT/audio/; returns its manifest row (or a skip record)."""
    from . import augment

    plan = _worker["planner"].plan(index)
    out = _worker["out"]
    engine = _worker["engines"].get(plan.voice.engine)
    if engine is None:
        engine = _worker["engines"][plan.voice.engine] = E.get_engine(plan.voice.engine)
    t0 = time.perf_counter()
    try:
        speech = engine.speak(plan.text, plan.voice, rate=plan.rate, pitch=plan.pitch)
    except VoxlmError as exc:  # text this voice cannot speak: record it, never retry forever
        row = {"id": plan.id, "skipped": str(exc)}
        write_json(out / "audio" / f"{plan.id}.json", row)
        return row
    audio, words = speech.audio, speech.words
    if plan.augment is not None:
        audio, words = augment.apply(audio, words, plan.augment, seed=index)
    audio = normalize_loudness(audio, plan.loudness_db)
    save_audio(out / "audio" / f"{plan.id}.wav", audio)
    row = {"id": plan.id, "audio": f"audio/{plan.id}.wav", "duration": round(len(audio) / SAMPLE_RATE, 3),
           "text": speech.text, "words": [{"w": w.w, "start": w.start, "end": w.end} for w in words],
           "speaker": plan.voice.id, "engine": plan.voice.engine, "split": plan.split,
           "source": plan.source, "rate": plan.rate, "pitch": plan.pitch,
           "augment": asdict(plan.augment) if plan.augment is not None else None,
           "synth_seconds": round(time.perf_counter() - t0, 3)}
    write_json(out / "audio" / f"{plan.id}.json", row)
    return row


def _done_rows(out: Path) -> dict:
    rows = {}
    for path in (out / "audio").glob("*.json"):
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not possible with atomic writes, but never trust a disk
        rows[int(row["id"])] = row
    return rows


def synthesize_corpus(out_dir, config: CorpusConfig, progress: bool = True) -> Path:
    """Generate (or finish) a corpus in out_dir; returns the manifest path."""
    import multiprocessing as mp

    from tqdm import tqdm

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VoxlmError(f"{out}: exists and is not a folder; pass a new or corpus folder to --out")
    if config.minutes <= 0:
        raise VoxlmError(f"--minutes {config.minutes} must be positive",
                         "pass the minutes of audio to make, e.g. 30")
    planner = Planner(config)  # validates engines, voices and sources before any work starts
    config_path = out / "corpus.json"
    saved = {"config": json.loads(json.dumps(asdict(config))), "voices": planner.splits}
    if config_path.exists():
        old = json.loads(config_path.read_text())
        if {k: v for k, v in old["config"].items() if k not in ("minutes", "workers")} != \
                {k: v for k, v in saved["config"].items() if k not in ("minutes", "workers")}:
            raise VoxlmError(f"{out}: holds a corpus made with other settings; use a new --out "
                             "folder or the same settings to resume")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out / "audio")  # temp files of a killed run
    write_json(config_path, saved)
    target = config.minutes * 60.0
    rows = _done_rows(out)
    seconds = sum(r.get("duration", 0.0) for r in rows.values())
    bar = tqdm(total=round(target), initial=round(min(seconds, target)), unit="s audio",
               disable=not progress, desc="synth corpus")
    ctx = mp.get_context("spawn")
    with ctx.Pool(config.workers, initializer=_init_worker, initargs=(config, str(out))) as pool:
        next_index = 0
        while seconds < target:
            avg = seconds / max(1, sum("duration" in r for r in rows.values())) or EST_ITEM_SECONDS
            want = max(1, int((target - seconds) / (avg or EST_ITEM_SECONDS)) + 1)
            todo = []
            while len(todo) < want:
                if next_index not in rows:
                    todo.append(next_index)
                next_index += 1
            for row in pool.imap_unordered(make_item, todo):
                rows[int(row["id"])] = row
                seconds += row.get("duration", 0.0)
                bar.update(round(row.get("duration", 0.0)))
    bar.close()
    return write_corpus_manifest(out, rows)


def write_corpus_manifest(out: Path, rows: dict) -> Path:
    """manifest.jsonl (every finished item, id order) beside the audio folder."""
    good = [rows[k] for k in sorted(rows) if "audio" in rows[k]]
    return write_manifest(out / "manifest.jsonl", good)
