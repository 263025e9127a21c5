"""Two-channel spoken dialogues: stereo 16 kHz wav, channel 0 = user, channel 1 = assistant.

A dialogue is either a stretch of a real chitchat conversation (first speaker = user) or one to a
few spoken QA exchanges (user asks `text.qa_pair`, assistant answers). Every assistant turn uses
one voice (`DialogueConfig.assistant_voice`); the user voice changes from dialogue to dialogue,
and its split is the one that voice has in every corpus (`engines.voice_split`).

Timing follows what conversation research measured in real talk:
- turn transitions: floor-transfer offsets from a split Laplace with its mode at +200 ms, most
  between -500 ms (overlap) and +1000 ms (gap), about a fifth of them overlaps (Stivers et al.
  2009; Levinson & Torreira 2015);
- within-turn pauses: a turn is spoken in chunks (sentences, sometimes clauses) joined by
  log-normal pauses of a few hundred ms;
- interruptions: the user starts during a long assistant turn; the assistant stops at the word
  boundary nearest a 200-400 ms reaction time, with a short fade; its turn keeps only the words
  actually said and is marked `"interrupted": true`;
- backchannels ("mm-hmm", "yeah", ...) in the listener's voice and channel, at pauses inside the
  other speaker's longer turns.

`make_dialogue` draws every choice from generators seeded by (config.seed, index), so the same
pair gives the same voices, texts and turn structure (timings can move by a few ms because eSpeak
NG itself does not render a text identically twice). `synthesize_dialogues` writes `OUT/dialogues/{id}.wav`, then its
sidecar `OUT/dialogues/{id}.json` (both atomic), then `OUT/manifest.jsonl` from the sidecars in
id order; a re-run skips ids whose sidecar exists.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, normalize_loudness, save_audio
from ..data import check_row, remove_stale_temps, write_json, write_manifest
from ..errors import VoxlmError
from .engines import voice_split

USER, ASSISTANT = 0, 1  # channel indices (dGSLM convention)
ROLES = ("user", "assistant")
# backchannel as written -> what we ask the engines to say (eSpeak reads "mm-hmm" as letters)
BACKCHANNELS = {"mm-hmm": "umhum", "yeah": "yeah", "right": "right", "okay": "okay",
                "uh-huh": "uh-huh"}


@dataclass(frozen=True)
class DialogueConfig:
    seed: int = 0  # with the dialogue index, fixes everything about one dialogue
    assistant_voice: str = "piper:joe"  # ENGINE:NAME, the one voice of every assistant turn
    user_engines: tuple = ("espeak", "flite", "kokoro", "piper")  # engines user voices come from
    engine_weights: tuple = (4.0, 3.0, 0.3, 1.0)  # relative odds per engine (kokoro is ~1.2x RT)
    qa_share: float = 0.4  # fraction of dialogues that are spoken QA; the rest are chitchat
    qa_exchanges: tuple = (1, 4)  # QA exchanges in one QA dialogue, inclusive range
    max_operand: int = 12  # largest number in arithmetic questions (0..12, plus, minus, times)
    qa_weights: tuple = (4, 1, 1, 2)  # odds of arithmetic, counting, spelling, fact questions
    chitchat_turns: tuple = (4, 8)  # consecutive turns taken from one conversation, inclusive
    user_rates: tuple = (0.9, 1.0, 1.1)  # speaking-rate factors a user voice may get
    user_pitch: tuple = (0.85, 1.15)  # pitch factor range for user voices (espeak honours it)
    # voice shift: each dialogue with a training user voice gets a pitch-and-formant shift
    # (sox `pitch`, duration kept) drawn uniformly in +-user_shift semitones, so a few voices
    # become many; held-out voices are never shifted, so evaluations stay what they were
    user_shift: float = 0.0  # semitones; 0: off
    # turn transitions: floor-transfer offset in seconds (speech end -> next speech start),
    # negative = overlap; split Laplace (sharply peaked, as real transitions are) at gap_mode_s
    gap_mode_s: float = 0.2  # s, modal transition (Stivers et al. 2009)
    gap_sd_early_s: float = 0.25  # s, mean spread below the mode: ~19% of transitions overlap
    gap_sd_late_s: float = 0.35  # s, mean spread above the mode (long gaps are more common)
    gap_range_s: tuple = (-0.5, 1.0)  # s, draws outside are redrawn
    # within-turn pauses (silence between chunks of one turn), log-normal
    pause_median_s: float = 0.45  # s
    pause_sigma: float = 0.4  # log-normal shape
    pause_range_s: tuple = (0.2, 1.2)  # s, clipped to this
    clause_split_prob: float = 0.3  # chance a comma also ends a chunk (adds a pause there)
    # interruptions (user cuts into an assistant turn)
    interrupt_prob: float = 0.2  # chance per eligible assistant turn followed by a user turn
    interrupt_min_turn_s: float = 2.5  # s of assistant speech needed for a turn to be eligible
    interrupt_after_s: float = 1.0  # s, earliest user onset after the assistant started
    interrupt_before_s: float = 0.8  # s, latest user onset before the assistant would end
    reaction_s: tuple = (0.2, 0.4)  # s, the assistant stops this long after the user starts
    fade_s: float = 0.03  # s, fade-out applied at the cut
    # backchannels (listener's short response during the other's turn)
    backchannel_prob: float = 0.4  # chance of a backchannel at each eligible pause
    backchannel_min_turn_s: float = 2.0  # s of speech a turn needs before it gets backchannels
    backchannel_min_pause_s: float = 0.2  # s, shortest within-turn pause that can host one
    backchannel_delay_s: tuple = (0.1, 0.4)  # s, listener onset after the pause began
    backchannel_clear_s: float = 0.3  # s, keep this far from the listener's own speech
    edge_s: float = 0.3  # s of silence before the first and after the last speech


@dataclass
class _Clip:
    """Speech from one engine call or a joined turn, times relative to its first sample."""

    audio: np.ndarray  # [T] float32, 16 kHz
    words: list  # [Word]
    runs: list  # [(start_s, end_s)] speech runs

    @property
    def onset(self) -> float:
        return self.runs[0][0] if self.runs else 0.0

    @property
    def offset(self) -> float:
        return self.runs[-1][1] if self.runs else len(self.audio) / SAMPLE_RATE


@dataclass
class _Placed:
    """One turn or backchannel placed on the dialogue timeline."""

    channel: int
    kind: str  # "turn" | "backchannel"
    text: str
    clip: _Clip
    start: int  # sample of the clip's first sample in the dialogue
    interrupted: bool = False
    end_s: float | None = None  # speech end when cut short

    @property
    def t0(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def onset(self) -> float:
        return self.t0 + self.clip.onset

    @property
    def offset(self) -> float:
        return self.end_s if self.end_s is not None else self.t0 + self.clip.offset


@dataclass
class _Context:
    config: DialogueConfig
    rng: random.Random
    engines: dict
    voices: tuple  # (user Voice, assistant Voice)
    prosody: tuple  # ((rate, pitch) user, (rate, pitch) assistant)
    bc_rng: random.Random  # own stream, so backchannels do not shift the main turns' draws
    cache: dict = field(default_factory=dict)
    user_cents: float = 0.0  # the user voice's pitch-and-formant shift (DialogueConfig.user_shift)


# ---------------------------------------------------------------- voices, texts, splits

def user_voices(config: DialogueConfig) -> dict:
    """{engine: [Voice]} the user voice is drawn from (the assistant voice left out)."""
    from .engines import get_engine

    out = {}
    for name in config.user_engines:
        voices = [v for v in get_engine(name).voices() if v.id != config.assistant_voice]
        if voices:
            out[name] = voices
    if not out:
        raise VoxlmError(f"no user voices in engines {', '.join(config.user_engines)} once the "
                         f"assistant voice {config.assistant_voice} is left out; add an engine")
    return out


_CONVERSATIONS: list = []


def _conversations() -> list:
    if not _CONVERSATIONS:
        from .text import chitchat_conversations

        _CONVERSATIONS.extend(chitchat_conversations())
    return _CONVERSATIONS


def _plan(rng: random.Random, config: DialogueConfig):
    """('qa' | 'chitchat', [(channel, text)]) with the user first."""
    from .text import qa_pair

    if rng.random() < config.qa_share:
        plan = []
        for _ in range(rng.randint(*config.qa_exchanges)):
            question, answer = qa_pair(rng, config.max_operand, config.qa_weights)
            plan += [(USER, question), (ASSISTANT, answer)]
        return "qa", plan
    conversations = _conversations()
    turns = conversations[rng.randrange(len(conversations))]
    n = min(rng.randint(*config.chitchat_turns), len(turns))
    first = rng.randrange(0, len(turns) - n + 1) // 2 * 2  # even: keep the opener as the user
    return "chitchat", [(k % 2, t) for k, t in enumerate(turns[first:first + n])]


def _chunks(text: str, rng: random.Random, clause_prob: float) -> list:
    """Split a turn into sentences, and with clause_prob at commas; joined back by spaces they
    give the same words as the turn."""
    from .engines import text_words

    out = []
    for sentence in re.findall(r"[^.!?]+[.!?]*", text):
        parts = re.split(r"(?<=,)\s+", sentence.strip())
        current = parts[0]
        for part in parts[1:]:
            if rng.random() < clause_prob:
                out.append(current)
                current = part
            else:
                current += " " + part
        out.append(current)
    return [c for c in out if text_words(c)]


# ---------------------------------------------------------------- speech

def _speak(ctx: _Context, text: str, channel: int) -> _Clip:
    from .align import speech_runs
    from .engines import get_engine

    voice = ctx.voices[channel]
    rate, pitch = ctx.prosody[channel]
    key = (voice.id, rate, pitch, text)
    if key not in ctx.cache:
        if voice.engine not in ctx.engines:
            ctx.engines[voice.engine] = get_engine(voice.engine)
        speech = ctx.engines[voice.engine].speak(text, voice, rate=rate, pitch=pitch)
        audio = speech.audio
        if channel == USER and ctx.user_cents:
            from .augment import sox

            audio = sox(audio, ["pitch", f"{ctx.user_cents:.0f}"])
        audio = normalize_loudness(audio)
        ctx.cache[key] = _Clip(audio, list(speech.words), speech_runs(audio))
    return ctx.cache[key]


def _join(clips: list, pauses: list) -> _Clip:
    """Concatenate clips so that the silence between one's speech end and the next one's speech
    start is the given pause (seconds)."""
    starts = [0]
    for k in range(1, len(clips)):
        t = starts[-1] / SAMPLE_RATE + clips[k - 1].offset + pauses[k - 1] - clips[k].onset
        starts.append(max(int(round(t * SAMPLE_RATE)), starts[-1] + len(clips[k - 1].audio) // 2))
    audio = np.zeros(max(s + len(c.audio) for s, c in zip(starts, clips)), np.float32)  # [T]
    words, runs = [], []
    for s, c in zip(starts, clips):
        audio[s:s + len(c.audio)] += c.audio
        shift = s / SAMPLE_RATE
        words += [type(w)(w.w, round(w.start + shift, 3), round(w.end + shift, 3)) for w in c.words]
        runs += [(a + shift, b + shift) for a, b in c.runs]
    return _Clip(audio, words, runs)


def _turn(ctx: _Context, text: str, channel: int) -> _Clip:
    cfg, rng = ctx.config, ctx.rng
    chunks = _chunks(text, rng, cfg.clause_split_prob)
    clips = [_speak(ctx, c, channel) for c in chunks]
    pauses = [float(np.clip(cfg.pause_median_s * np.exp(rng.gauss(0.0, cfg.pause_sigma)),
                            *cfg.pause_range_s)) for _ in clips[1:]]
    return _join(clips, pauses)


def _draw_gap(rng: random.Random, cfg: DialogueConfig) -> float:
    """Floor-transfer offset, seconds: split Laplace with mode cfg.gap_mode_s, truncated."""
    left = cfg.gap_sd_early_s / (cfg.gap_sd_early_s + cfg.gap_sd_late_s)
    for _ in range(100):
        sd = cfg.gap_sd_early_s if rng.random() < left else cfg.gap_sd_late_s
        side = -1.0 if sd == cfg.gap_sd_early_s else 1.0
        gap = cfg.gap_mode_s + side * rng.expovariate(1.0 / sd)
        if cfg.gap_range_s[0] <= gap <= cfg.gap_range_s[1]:
            return gap
    return cfg.gap_mode_s


# ---------------------------------------------------------------- timeline

def _interrupt(ctx: _Context, prev: _Placed, user_free: float):
    """Cut `prev` (an assistant turn) where a user cutting in would stop it; return the user's
    onset (seconds) or None when the turn is not eligible."""
    cfg, rng = ctx.config, ctx.rng
    lo = max(prev.onset + cfg.interrupt_after_s, user_free)
    hi = prev.offset - cfg.interrupt_before_s
    if prev.offset - prev.onset < cfg.interrupt_min_turn_s or hi <= lo:
        return None
    if rng.random() >= cfg.interrupt_prob:
        return None
    t_user = rng.uniform(lo, hi)
    target = t_user + rng.uniform(*cfg.reaction_s)
    ends = [prev.t0 + w.end for w in prev.clip.words]
    near = [e for e in ends if t_user + 0.15 <= e <= t_user + 0.6]
    later = [e for e in ends if e >= t_user + 0.15]
    if not later:
        return None
    cut = min(near, key=lambda e: abs(e - target)) if near else later[0]
    keep = sum(1 for e in ends if e <= cut + 1e-6)
    if keep >= len(ends):  # the assistant would have finished anyway: a plain overlap
        return t_user
    _truncate(prev, keep, cut, cfg.fade_s)
    return t_user


def _truncate(turn: _Placed, keep: int, cut: float, fade_s: float):
    """Silence `turn` after `cut` (absolute seconds) with a linear fade; keep its first words."""
    from .engines import text_words

    clip = turn.clip
    c = int(round((cut - turn.t0) * SAMPLE_RATE))
    n_fade = int(fade_s * SAMPLE_RATE)
    audio = clip.audio[: c + n_fade + int(0.1 * SAMPLE_RATE)].copy()
    audio[c:c + n_fade] *= np.linspace(1.0, 0.0, len(audio[c:c + n_fade]), dtype=np.float32)
    audio[c + n_fade:] = 0.0
    tokens = text_words(turn.text)
    if len(tokens) == len(clip.words):
        turn.text = turn.text[: tokens[keep - 1][2]].rstrip(",;:")
    else:
        turn.text = " ".join(w.w for w in clip.words[:keep])
    runs = [(a, min(b, cut - turn.t0)) for a, b in clip.runs if a < cut - turn.t0]
    turn.clip = _Clip(audio, clip.words[:keep], runs)
    turn.interrupted = True
    turn.end_s = cut


def _backchannels(ctx: _Context, placed: list) -> list:
    """Backchannels in the listener's channel at pauses inside the other speaker's long turns."""
    from .engines import Word

    cfg, rng = ctx.config, ctx.bc_rng
    busy = {USER: [], ASSISTANT: []}
    for p in placed:
        busy[p.channel].append((p.onset, p.offset))
    out = []
    for turn in placed:
        if turn.offset - turn.onset < cfg.backchannel_min_turn_s:
            continue
        listener = 1 - turn.channel
        runs = [(a + turn.t0, b + turn.t0) for a, b in turn.clip.runs]
        for (_, pause_start), (pause_end, _) in zip(runs, runs[1:]):
            if pause_end - pause_start < cfg.backchannel_min_pause_s or pause_end > turn.offset:
                continue
            if rng.random() >= cfg.backchannel_prob:
                continue
            written = rng.choice(sorted(BACKCHANNELS))
            clip = _speak(ctx, BACKCHANNELS[written], listener)
            onset = pause_start + rng.uniform(*cfg.backchannel_delay_s)
            offset = onset + clip.offset - clip.onset
            clear = cfg.backchannel_clear_s
            if any(offset + clear > a and onset - clear < b for a, b in busy[listener]):
                continue
            words = [Word(written, clip.words[0].start, clip.words[-1].end)] if clip.words else []
            start = int(round((onset - clip.onset) * SAMPLE_RATE))
            out.append(_Placed(listener, "backchannel", written, _Clip(clip.audio, words, clip.runs),
                               start))
            busy[listener].append((onset, offset))
    return out


def _timeline(ctx: _Context, plan: list) -> list:
    cfg, rng = ctx.config, ctx.rng
    placed, last = [], {USER: None, ASSISTANT: None}
    for channel, text in plan:
        clip = _turn(ctx, text, channel)
        prev = placed[-1] if placed else None
        own = last[channel]
        free = own.offset + cfg.pause_range_s[0] if own else 0.0  # same channel never overlaps
        onset = None
        if prev is None:
            onset = cfg.edge_s
        elif channel == USER and prev.channel == ASSISTANT:
            onset = _interrupt(ctx, prev, free)
        if onset is None:
            gap = _draw_gap(rng, cfg)
            gap = max(gap, -0.5 * (prev.offset - prev.onset))
            onset = prev.offset + gap
        onset = max(onset, free)
        turn = _Placed(channel, "turn", text, clip, int(round((onset - clip.onset) * SAMPLE_RATE)))
        placed.append(turn)
        last[channel] = turn
    return placed + _backchannels(ctx, placed)


# ---------------------------------------------------------------- public API

def dialogue_id(index: int) -> str:
    return f"dialogue-{index:06d}"


def close_engines(engines: dict):
    for engine in engines.values():
        engine.close()
    engines.clear()


def make_dialogue(index: int, config: DialogueConfig = DialogueConfig(), engines: dict | None = None):
    """Build dialogue `index`: (stereo [T, 2] float32 16 kHz, manifest row). Deterministic given
    (config.seed, index) up to the engines: eSpeak NG renders the same text a few ms
    differently from call to call, which can move timings and the choices that depend on them. `engines` is a {name: Engine} dict that is
    filled lazily and reused across calls (close it with `close_engines`); None: a private one."""
    from .engines import parse_voice

    rng = random.Random(f"voxlm-dialogue:{config.seed}:{index}")
    assistant = parse_voice(config.assistant_voice)
    pool = user_voices(config)
    names = sorted(pool)
    weights = [dict(zip(config.user_engines, config.engine_weights)).get(n, 1.0) for n in names]
    user = rng.choice(pool[rng.choices(names, weights=weights)[0]])
    prosody = ((rng.choice(config.user_rates), round(rng.uniform(*config.user_pitch), 2)), (1.0, 1.0))
    source, plan = _plan(rng, config)
    own = engines is None
    engines = {} if own else engines
    try:
        bc_rng = random.Random(f"voxlm-backchannels:{config.seed}:{index}")
        cents = 0.0
        if config.user_shift and voice_split(user) == "train":  # its own stream of draws too
            shift = random.Random(f"voxlm-user-shift:{config.seed}:{index}")
            cents = round(shift.uniform(-1.0, 1.0) * config.user_shift * 100.0)
        placed = _timeline(_Context(config, rng, engines, (user, assistant), prosody, bc_rng,
                                    user_cents=cents), plan)
    finally:
        if own:
            close_engines(engines)
    placed.sort(key=lambda p: (p.onset, p.channel))
    edge = int(config.edge_s * SAMPLE_RATE)
    shift = edge - min(p.start + int(round(p.clip.onset * SAMPLE_RATE)) for p in placed)
    length = max(p.start + shift + len(p.clip.audio) for p in placed) + edge
    stereo = np.zeros((length, 2), np.float32)  # [T, 2]
    turns, words = [], []
    for p in placed:
        p.start += shift
        s = max(p.start, 0)
        stereo[s:p.start + len(p.clip.audio), p.channel] += p.clip.audio[s - p.start:]
        ws = [{"w": w.w, "start": round(p.t0 + w.start, 3), "end": round(p.t0 + w.end, 3)}
              for w in p.clip.words]
        words += [{**w, "channel": p.channel} for w in ws]
        turns.append({"channel": p.channel, "start": round(p.onset, 3), "end": round(p.offset, 3),
                      "text": p.text, "words": ws, "kind": p.kind, "interrupted": p.interrupted})
    np.clip(stereo, -1.0, 1.0, out=stereo)
    words.sort(key=lambda w: (w["start"], w["channel"]))
    did = dialogue_id(index)
    row = {"id": did, "audio": f"dialogues/{did}.wav", "duration": round(length / SAMPLE_RATE, 3),
           "text": "\n".join(f"{ROLES[t['channel']]}: {t['text']}" for t in turns),
           "words": words, "speaker": f"{user.id}|{assistant.id}",
           "engine": f"{user.engine}+{assistant.engine}", "split": voice_split(user),
           "turns": turns, "source": source, "user_voice": user.id, "assistant_voice": assistant.id}
    if cents:
        row["user_shift_cents"] = cents
    return stereo, check_row(row, did)


# ---------------------------------------------------------------- corpus writer

_WORKER: dict = {}


def _init_worker(config: DialogueConfig, conversations: list):
    from multiprocessing import util

    _WORKER.update(config=config, engines={})
    _CONVERSATIONS[:] = conversations
    util.Finalize(None, close_engines, args=(_WORKER["engines"],), exitpriority=10)


def _write_one(folder: Path, index: int, config: DialogueConfig, engines: dict) -> float:
    stereo, row = make_dialogue(index, config, engines)
    save_audio(folder / f"{row['id']}.wav", stereo)
    write_json(folder / f"{row['id']}.json", row)  # the sidecar marks the dialogue as done
    return row["duration"]


def synthesize_dialogues(out_dir, count: int, config: DialogueConfig = DialogueConfig(),
                         workers: int = 2, progress: bool = True) -> Path:
    """Write `count` dialogues under out_dir and return the manifest path. Resumable: ids whose
    sidecar exists are skipped, so a re-run after a kill finishes the set with no duplicates."""
    from tqdm import tqdm

    if count < 1:
        raise VoxlmError(f"dialogue count {count} is below 1; pass --count 1 or more")
    out = Path(out_dir)
    folder = out / "dialogues"
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # temp files of a killed run
    todo = [k for k in range(count) if not (folder / f"{dialogue_id(k)}.json").is_file()]
    bar = tqdm(total=count, initial=count - len(todo), unit="dialogue", disable=not progress,
               desc="dialogues")
    if todo and workers <= 1:
        engines = {}
        try:
            for k in todo:
                _write_one(folder, k, config, engines)
                bar.update(1)
        finally:
            close_engines(engines)
    elif todo:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        texts = _conversations() if config.qa_share < 1.0 else []
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(config, texts)) as pool:
            # spawn, not fork: no engine state or pipes copied into workers
            futures = [pool.submit(_work, folder, k) for k in todo]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    bar.close()
    rows = []
    for k in range(count):
        path = folder / f"{dialogue_id(k)}.json"
        if not path.is_file():
            raise VoxlmError(f"{path}: missing after synthesis; re-run the same command to finish")
        rows.append(json.loads(path.read_text(encoding="utf-8")))
    return write_manifest(out / "manifest.jsonl", rows)


def _work(folder: Path, index: int) -> float:
    return _write_one(folder, index, _WORKER["config"], _WORKER["engines"])
