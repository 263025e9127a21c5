"""Turn-taking statistics measured from the audio of two-channel dialogues.

Works on any stereo dialogue (synthetic corpus or model-generated), so the same numbers compare
our data, our model's conversations and real ones. Definitions follow dGSLM (Nguyen et al. 2022,
"Generative Spoken Dialogue Language Modeling", after Heldner & Edlund 2010):

- voice activity: per channel, 10 ms frames (no overlap between frames, so an edge is off by at
  most one frame) whose energy is within ACTIVE_REL_DB of the channel's loudest frame and above
  ACTIVE_FLOOR_DB (a silent channel stays silent);
- IPU (inter-pausal unit): speech of one channel with silences shorter than MIN_SILENCE_S
  bridged, so IPUs of one channel are separated by >= 200 ms; IPUs shorter than MIN_IPU_S
  (clicks) are dropped;
- pause: silence of both channels between two IPUs of the same speaker (no speech of the other
  in between);
- gap: silence of both channels between IPUs of different speakers (a turn transition);
- overlap: both channels speaking at once. An overlap that starts with one speaker alone and ends
  with the other alone is a transition in overlap (a negative floor-transfer offset);
- backchannel (heuristic): an IPU of at most BACKCHANNEL_MAX_S lying within the other speaker's
  hold of the floor (the other speaks before and after it with at most BACKCHANNEL_HOLD_S of
  silence around it). When manifest rows are given, their "backchannel" turns are counted too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .audio import SAMPLE_RATE
from .synth.align import mask_runs

FRAME = 160  # samples, 10 ms
FRAME_S = FRAME / SAMPLE_RATE  # 0.01 s
ACTIVE_REL_DB = -40.0  # dB below the channel's loudest frame that still counts as speech
ACTIVE_FLOOR_DB = -60.0  # dBFS, frames quieter than this are silence whatever the channel's peak
MIN_SILENCE_S = 0.2  # s, shorter silences inside one channel are bridged (IPU definition)
MIN_IPU_S = 0.05  # s, shorter bursts are dropped
BACKCHANNEL_MAX_S = 1.0  # s, longest IPU the backchannel heuristic accepts
BACKCHANNEL_HOLD_S = 1.0  # s, the other speaker resumes within this silence around it
HIST_BIN_S = 0.05  # s, histogram bin for the modal gap

# Published figures for real conversation. Only numbers we could check are listed; the dGSLM
# paper's Fisher table (IPU/pause/gap/overlap counts per minute) was not reachable from here.
REFERENCE = {
    # modal floor-transfer offset ~200 ms in 10 languages (Stivers et al. 2009, PNAS 106(26));
    # reviewed in Levinson & Torreira 2015, Front. Psychol. 6:731
    "gap_mode_s": (0.2, "Stivers et al. 2009; Levinson & Torreira 2015"),
    # about 40% of between-speaker intervals are overlaps (Heldner & Edlund 2010, J. Phonetics
    # 38(4), as summarised by Chowdhury et al., Interspeech 2016)
    "overlap_transition_share": (0.40, "Heldner & Edlund 2010"),
}


class Event(NamedTuple):
    kind: str  # "ipu" | "pause" | "gap" | "overlap" | "backchannel"
    channel: int  # speaker of an IPU/pause/backchannel; next speaker of a gap or transition; -1 else
    start: float  # s
    end: float  # s

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class EventStats:
    count: int
    per_min: float  # occurrences per minute of dialogue
    total_s: float  # cumulative duration, s
    s_per_min: float  # cumulative duration per minute of dialogue, s
    mean_s: float
    median_s: float


@dataclass
class TurnTakingStats:
    minutes: float
    dialogues: int
    ipu: EventStats
    pause: EventStats
    gap: EventStats
    overlap: EventStats
    gap_mode_s: float  # centre of the fullest HIST_BIN_S bin of gaps not next to a backchannel
    overlap_transition_share: float  # transitions in overlap / all transitions
    backchannels_per_min: float  # IPU heuristic
    backchannels_per_min_manifest: float | None = None  # from manifest rows, when given
    durations: dict = field(default_factory=dict, repr=False)  # kind -> [s]


def voice_activity(audio: np.ndarray, min_silence_s: float = MIN_SILENCE_S,
                   min_ipu_s: float = MIN_IPU_S) -> np.ndarray:
    """IPU activity of one channel: bool [N] over 10 ms frames, silences < min_silence_s
    bridged, bursts < min_ipu_s dropped."""
    n = len(audio) // FRAME + (len(audio) % FRAME > 0)
    padded = np.zeros(n * FRAME, np.float32)
    padded[: len(audio)] = audio
    db = 10 * np.log10(np.mean(np.square(padded.reshape(n, FRAME), dtype=np.float64), axis=1) + 1e-12)
    active = db > max(db.max() + ACTIVE_REL_DB, ACTIVE_FLOOR_DB)  # [N]
    runs = mask_runs(active)
    bridge = int(round(min_silence_s / FRAME_S))
    for (_, e), (s, _) in zip(runs, runs[1:]):
        if s - e < bridge:
            active[e:s] = True
    for s, e in mask_runs(active):
        if e - s < int(round(min_ipu_s / FRAME_S)):
            active[s:e] = False
    return active


def turn_events(stereo: np.ndarray, min_silence_s: float = MIN_SILENCE_S) -> list:
    """Every IPU, pause, gap, overlap and (heuristic) backchannel of a stereo dialogue [T, 2],
    as [Event] sorted by start."""
    stereo = np.asarray(stereo, np.float32)
    if stereo.ndim != 2 or stereo.shape[1] != 2:
        from .errors import VoxlmError

        raise VoxlmError(f"expected stereo audio [T, 2], got shape {list(stereo.shape)}; "
                         "pass a two-channel dialogue (channel 0 user, 1 assistant)")
    act = np.stack([voice_activity(stereo[:, c], min_silence_s) for c in (0, 1)])  # [2, N]
    t = lambda k: round(float(k) * FRAME_S, 3)  # noqa: E731
    events = []
    ipus = {c: mask_runs(act[c]) for c in (0, 1)}
    for c in (0, 1):
        events += [Event("ipu", c, t(s), t(e)) for s, e in ipus[c]]
    n = act.shape[1]
    state = act[0].astype(np.int8) + 2 * act[1].astype(np.int8)  # 0 none, 1 user, 2 asst, 3 both
    for s, e in mask_runs(state == 0):  # silences of both channels
        if s == 0 or e == n:
            continue
        before, after = state[s - 1], state[e]
        if before & after:  # a speaker active on both sides: pause of that speaker
            events.append(Event("pause", 0 if before & after & 1 else 1, t(s), t(e)))
        else:
            events.append(Event("gap", 0 if after & 1 else 1, t(s), t(e)))
    for s, e in mask_runs(state == 3):
        before = state[s - 1] if s > 0 else 0
        after = state[e] if e < n else 0
        nxt = 0 if after == 1 else 1 if after == 2 else -1
        is_switch = before in (1, 2) and after in (1, 2) and before != after
        events.append(Event("overlap", nxt if is_switch else -1, t(s), t(e)))
    for c in (0, 1):
        other = ipus[1 - c]
        hold = int(round(BACKCHANNEL_HOLD_S / FRAME_S))
        for s, e in ipus[c]:
            if (e - s) * FRAME_S > BACKCHANNEL_MAX_S:
                continue
            before = [o for o in other if o[0] < s and o[1] >= s - hold]
            after = [o for o in other if o[1] > e and o[0] <= e + hold]
            if before and after:
                events.append(Event("backchannel", c, t(s), t(e)))
    return sorted(events, key=lambda ev: (ev.start, ev.kind))


def is_transition(event: Event) -> bool:
    """Gaps and overlaps where the floor changed hands (not backchannel overlaps)."""
    return event.kind == "gap" or (event.kind == "overlap" and event.channel >= 0)


def _summary(durations: list, minutes: float) -> EventStats:
    d = np.asarray(durations, np.float64)
    return EventStats(len(d), len(d) / minutes, float(d.sum()), float(d.sum()) / minutes,
                      float(d.mean()) if len(d) else 0.0, float(np.median(d)) if len(d) else 0.0)


def _load(item) -> np.ndarray:
    if isinstance(item, (str, Path)):
        from .audio import load_audio

        return load_audio(item, mono=False)  # [T, 2]
    return np.asarray(item, np.float32)


def gap_mode(gaps: np.ndarray, bandwidth_s: float = HIST_BIN_S) -> float:
    """Mode of the gap distribution, seconds: peak of a Gaussian kernel density estimate
    (bandwidth one histogram bin), steadier than a histogram's tallest bin on few gaps."""
    gaps = np.asarray(gaps, dtype=np.float64)
    if not len(gaps):
        return float("nan")
    grid = np.arange(0.0, gaps.max() + 0.005, 0.005)  # 5 ms steps
    density = np.exp(-0.5 * ((grid[:, None] - gaps[None, :]) / bandwidth_s) ** 2).sum(axis=1)
    return float(grid[int(np.argmax(density))])


def stats_for_folder(folder) -> str:
    """`voxlm synth stats DIR`: markdown statistics of a dialogue folder's manifest."""
    from .data import read_manifest

    folder = Path(folder)
    rows = read_manifest(folder)
    root = folder if folder.is_dir() else folder.parent
    return format_stats(dialogue_stats([root / r["audio"] for r in rows], rows))


def dialogue_stats(items, rows: list | None = None, min_silence_s: float = MIN_SILENCE_S
                   ) -> TurnTakingStats:
    """Statistics over stereo dialogues: `items` is wav paths or [T, 2] arrays (or one of them).
    `rows`: manifest rows of the same dialogues, to count labelled backchannels."""
    if isinstance(items, (str, Path)) or (isinstance(items, np.ndarray) and items.ndim == 2):
        items = [items]
    durations = {k: [] for k in ("ipu", "pause", "gap", "overlap", "backchannel")}
    switches = 0
    seconds = 0.0
    transition_gaps = []  # gaps not next to a backchannel: floor-transfer offsets > 0
    for item in items:
        stereo = _load(item)
        seconds += len(stereo) / SAMPLE_RATE
        events = turn_events(stereo, min_silence_s)
        edges = {t for ev in events if ev.kind == "backchannel" for t in (ev.start, ev.end)}
        for ev in events:
            durations[ev.kind].append(ev.duration)
            switches += ev.kind == "overlap" and ev.channel >= 0
            if ev.kind == "gap" and ev.start not in edges and ev.end not in edges:
                transition_gaps.append(ev.duration)
    if seconds <= 0:
        from .errors import VoxlmError

        raise VoxlmError("no dialogue audio to measure; pass at least one stereo wav or array")
    minutes = seconds / 60.0
    gaps = np.asarray(transition_gaps or durations["gap"])
    mode = gap_mode(gaps)
    transitions = len(transition_gaps) + switches
    labelled = None
    if rows is not None:
        n = sum(1 for r in rows for turn in r.get("turns", []) if turn.get("kind") == "backchannel")
        labelled = n / minutes
    return TurnTakingStats(
        minutes, len(items), _summary(durations["ipu"], minutes), _summary(durations["pause"], minutes),
        _summary(durations["gap"], minutes), _summary(durations["overlap"], minutes), mode,
        switches / transitions if transitions else float("nan"),
        len(durations["backchannel"]) / minutes, labelled, durations)


def compare_to_reference(stats: TurnTakingStats) -> list:
    """[{"metric", "ours", "reference", "ratio", "within_2x", "source"}] for every published
    figure in REFERENCE."""
    rows = []
    for metric, (ref, source) in REFERENCE.items():
        ours = float(getattr(stats, metric))
        ratio = ours / ref if ref else float("nan")
        rows.append({"metric": metric, "ours": ours, "reference": ref, "ratio": ratio,
                     "within_2x": bool(0.5 <= ratio <= 2.0), "source": source})
    return rows


def format_stats(stats: TurnTakingStats, reference: list | None = None) -> str:
    """Markdown: event table (counts and durations per minute) and the comparison with published
    real-conversation figures (ours, theirs, ratio, within 2x)."""
    reference = compare_to_reference(stats) if reference is None else reference
    lines = [f"{stats.dialogues} dialogues, {stats.minutes:.2f} min", "",
             "| event | count | per min | s per min | mean s | median s |",
             "|---|---|---|---|---|---|"]
    for kind in ("ipu", "pause", "gap", "overlap"):
        e = getattr(stats, kind)
        lines.append(f"| {kind} | {e.count} | {e.per_min:.1f} | {e.s_per_min:.2f} | "
                     f"{e.mean_s:.3f} | {e.median_s:.3f} |")
    lines += ["", f"modal gap (kernel density, {HIST_BIN_S * 1000:.0f} ms bandwidth): "
              f"{stats.gap_mode_s * 1000:.0f} ms; "
              f"transitions in overlap: {stats.overlap_transition_share:.0%}; "
              f"backchannels per min: {stats.backchannels_per_min:.2f} (heuristic)"
              + (f", {stats.backchannels_per_min_manifest:.2f} (manifest)"
                 if stats.backchannels_per_min_manifest is not None else ""),
              "", "| metric | ours | real conversation | ratio | within 2x | source |",
              "|---|---|---|---|---|---|"]
    for r in reference:
        lines.append(f"| {r['metric']} | {r['ours']:.3f} | {r['reference']:.3f} | {r['ratio']:.2f} | "
                     f"{'yes' if r['within_2x'] else 'NO'} | {r['source']} |")
    return "\n".join(lines) + "\n"
