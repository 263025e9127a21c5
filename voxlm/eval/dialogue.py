"""`voxlm eval dialogue`: the dialogue model in conversation with held-out voices.

    voxlm eval dialogue --report reports/dialogue --checkpoint runs/dialogue --data data/dialogues

Protocol: dialogues of a `voxlm synth dialogues` corpus whose user voice was never trained on
(split test, then valid) are replayed to the model. Its user channel (channel 0) is fed to
`chat.chat`, the duplex runtime frame by frame, so the model hears each user turn as it is
spoken and answers (or not) while the user's next turns keep coming at the reference times.
The model's channel is generated live; the generated conversation is the stereo of the
reference user channel and the model's channel. The model gets TAIL_S seconds beyond the
reference to finish its last answer.

1. Turn-taking (`voxlm.turntaking`, dGSLM definitions): IPUs, pauses, gaps, overlaps and
   backchannels per minute, durations, the modal gap, generated beside reference.
2. Response latency: for each user turn the reference answers (a user turn, not a
   backchannel, followed by an assistant turn), the time from its speech end (manifest timing)
   to the first onset of voice activity on channel 1 (turntaking.voice_activity) within
   [-OVERLAP_S, +WINDOW_S]; negative = the answer starts in overlap; none there = a miss.
   The same on the reference assistant channel.
3. Spoken QA: for each QA question (`synth.text.qa_pair`), the answer it expects is worked out
   from the question itself (the sum, the count, the letters, the fact); Whisper tiny.en
   transcribes channel 1 from OVERLAP_S before the question ends to OVERLAP_S after the next
   user turn starts, and the answer is right when the normalised transcript (digits as words)
   contains the expected words in order. The reference assistant channel, judged the same way,
   checks the measure. Questions whose reference answer was interrupted are left out.

REPORT/report.md        the tables
REPORT/results.json     every number, per dialogue: latencies, QA transcripts, inner text
REPORT/turn_taking.png  events per minute and mean durations, generated vs reference
REPORT/latency.png      response latency histograms, generated vs reference
REPORT/examples/        the first EXAMPLES generated conversations (stereo wav: 0 user, 1 model)
"""
from __future__ import annotations

import io
import math
import re
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..audio import SAMPLE_RATE
from ..data import strict_json, write_atomic, write_json
from ..errors import VoxlmError
from ..turntaking import FRAME_S

DEFAULT_LIMIT = 20  # dialogues
HELD_OUT = ("test", "valid")  # user voices no model trained on (engines.voice_split), in order
OVERLAP_S = 0.5  # s, earliest answer start before the question ends (DialogueConfig.gap_range_s)
WINDOW_S = 5.0  # s after a user turn's end within which an answer's onset counts
TAIL_S = 5.0  # s the model may talk beyond the reference dialogue's end
HEARD_S = 1.0  # s after a question's end in which its words may still be written down
EXAMPLES = 3  # generated conversations written as wavs
LATENCY_BIN_S = 0.1  # s, histogram bin
STOPWORDS = {"a", "an", "the", "there", "is", "are", "has", "have", "called", "comes", "we"}
FIX_DATA = "pass --data a folder made by voxlm synth dialogues --out DIR --count 200"


# ---------------------------------------------------------------- expected answers

class Answer(NamedTuple):
    kind: str  # "arithmetic" | "counting" | "spelling" | "fact"
    words: tuple  # normalised words a right answer contains, in this order
    echo: tuple = ()  # words of the question an answer may restate: removed once before matching


_NUMBERS: dict = {}


def _number(words: str) -> int | None:
    """'forty four' -> 44 (0..999), None when it is not a number in words."""
    from ..synth.text import number_words

    if not _NUMBERS:
        _NUMBERS.update({number_words(n): n for n in range(1000)})
    return _NUMBERS.get(words.strip())


def expected_answer(question: str) -> Answer | None:
    """The answer a `synth.text.qa_pair` question expects, from the question alone; None when
    the text is not one of those questions."""
    from ..synth.text import FACTS, number_words
    from .metrics import normalize_text

    q = " ".join(normalize_text(question))
    m = re.fullmatch(r"(?:what is|how much is|can you tell me) (.+) (plus|minus|times) (.+)", q)
    if m and _number(m[1]) is not None and _number(m[3]) is not None:
        a, b = _number(m[1]), _number(m[3])
        value = {"plus": a + b, "minus": a - b, "times": a * b}[m[2]]
        return Answer("arithmetic", tuple(number_words(value).split()),
                      tuple(f"{m[1]} {m[2]} {m[3]}".split()))
    m = re.fullmatch(r"can you count from (.+) to (.+)", q)
    if m and _number(m[1]) is not None and _number(m[2]) is not None:
        words = " ".join(number_words(k) for k in range(_number(m[1]), _number(m[2]) + 1))
        return Answer("counting", tuple(words.split()))
    m = re.fullmatch(r"how do you spell ([a-z]+)", q)
    if m:
        return Answer("spelling", tuple(m[1]))
    for fact_q, fact_a in FACTS:
        if normalize_text(fact_q) == q.split():
            asked = set(q.split()) | STOPWORDS
            return Answer("fact", tuple(w for w in normalize_text(fact_a) if w not in asked))
    return None


def _find(words: list, part: tuple) -> int:
    """Index of the first occurrence of `part` in `words`, -1 when absent."""
    n = len(part)
    return next((i for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == part), -1)


def answer_correct(transcript: str, answer: Answer) -> bool:
    """The transcript, normalised (metrics.normalize_text: digits as words, lowercase, no
    punctuation) and with the restated question removed once, holds answer.words in order."""
    from .metrics import normalize_text

    words = normalize_text(transcript)
    at = _find(words, answer.echo) if answer.echo else -1
    if at >= 0:
        words = words[:at] + words[at + len(answer.echo):]
    return bool(answer.words) and _find(words, answer.words) >= 0


def restates(text: str, answer: Answer) -> bool:
    """The text restates the question's numbers and operator ("nine minus two is ..."), as every
    reference answer to a sum does: the question was heard, whatever the result."""
    from .metrics import normalize_text

    return bool(answer.echo) and _find(normalize_text(text), answer.echo) >= 0


# ---------------------------------------------------------------- what to measure per dialogue

def _turns(row, channel: int) -> list:
    return [t for t in row["turns"] if t["channel"] == channel and t["kind"] != "backchannel"]


def answered_user_turns(row) -> list:
    """User turns (not backchannels) whose next turn in the reference is the assistant's."""
    turns = [t for t in row["turns"] if t["kind"] != "backchannel"]
    return [t for t, nxt in zip(turns, turns[1:]) if t["channel"] == 0 and nxt["channel"] == 1]


def qa_items(row) -> list:
    """[{"question", "answer": Answer, "start", "end" (s, the channel-1 window to judge),
    "interrupted" (the reference answer was cut short)}] of a QA dialogue's questions."""
    if row.get("source") != "qa":
        return []
    users, turns = _turns(row, 0), [t for t in row["turns"] if t["kind"] != "backchannel"]
    out = []
    for k, turn in enumerate(users):
        answer = expected_answer(turn["text"])
        if answer is None:
            continue
        nxt = users[k + 1]["start"] if k + 1 < len(users) else None
        replies = [t for t in turns if t["channel"] == 1 and t["start"] > turn["start"]
                   and (nxt is None or t["start"] < nxt)]
        out.append({"question": turn["text"], "answer": answer, "asked": [turn["start"], turn["end"]],
                    "start": max(turn["end"] - OVERLAP_S, 0.0),
                    "end": None if nxt is None else nxt + OVERLAP_S,
                    "interrupted": bool(replies and replies[0]["interrupted"])})
    return out


def response_latencies(stereo: np.ndarray, ends: list, window_s: float = WINDOW_S,
                       overlap_s: float = OVERLAP_S) -> list:
    """For each time in `ends` (s, user speech ends): the first onset of voice activity on
    channel 1 of stereo [T, 2] in [end - overlap_s, end + window_s], as onset - end (s, on the
    10 ms activity grid); None when there is none."""
    from ..synth.align import mask_runs
    from ..turntaking import voice_activity

    onsets = [s * FRAME_S for s, _ in mask_runs(voice_activity(np.asarray(stereo)[:, 1]))]
    return [None if v is None else round(v, 3)
            for v in onset_latencies(onsets, ends, window_s, overlap_s)]


def onset_latencies(onsets: list, ends: list, window_s: float = WINDOW_S,
                    overlap_s: float = OVERLAP_S) -> list:
    """For each time in `ends` (s): the first of the sorted `onsets` (s, same clock) in
    [end - overlap_s, end + window_s], as onset - end; None when there is none."""
    out = []
    for end in ends:
        hits = [t for t in onsets if end - overlap_s - 1e-9 <= t <= end + window_s + 1e-9]
        out.append(hits[0] - end if hits else None)
    return out


def latency_summary(latencies: list) -> dict:
    """{"turns", "answered", "missed", "median_s", "p90_s", "mean_s", "overlap_share"}."""
    hits = np.array([v for v in latencies if v is not None], np.float64)
    nan = math.nan
    return {"turns": len(latencies), "answered": int(hits.size),
            "missed": len(latencies) - int(hits.size),
            "median_s": float(np.median(hits)) if hits.size else nan,
            "p90_s": float(np.percentile(hits, 90)) if hits.size else nan,
            "mean_s": float(hits.mean()) if hits.size else nan,
            "overlap_share": float(np.mean(hits < 0)) if hits.size else nan}


def inner_text_in(words: list, start: float, end: float | None) -> str:
    """The inner-text words (dicts with "w" and "start" s) that start in [start, end), joined:
    what the model meant to say over a QA item's window."""
    return " ".join(w["w"] for w in words
                    if w["start"] >= start - 1e-9 and (end is None or w["start"] < end))


def judge_qa(stereo: np.ndarray, items: list, judges) -> list:
    """Transcribe channel 1 over each item's window and judge it: [{"transcript", "correct"}]."""
    out = []
    for item in items:
        a = int(item["start"] * SAMPLE_RATE)
        b = len(stereo) if item["end"] is None else int(item["end"] * SAMPLE_RATE)
        segment = np.asarray(stereo[a:b, 1], np.float32)
        text = judges.transcribe(segment) if segment.size >= SAMPLE_RATE // 10 else ""
        out.append({"transcript": text, "correct": answer_correct(text, item["answer"])})
    return out


# ---------------------------------------------------------------- the corpus

def held_out_rows(data, limit: int) -> list:
    """Up to `limit` dialogues of the corpus in `data` whose user voice is held out (test
    first, then valid, in id order), with clear errors for a missing or non-dialogue corpus."""
    from ..data import read_manifest

    folder = Path(data)
    manifest = folder / "manifest.jsonl"
    if not folder.is_dir():
        raise VoxlmError(f"{folder}: no such folder", FIX_DATA)
    if not manifest.is_file():
        raise VoxlmError(f"{folder}: no manifest.jsonl (not a finished dialogue corpus)",
                         FIX_DATA)
    rows = read_manifest(manifest)
    if not all(isinstance(r.get("turns"), list) and r["turns"] for r in rows):
        raise VoxlmError(f"{manifest}: not a dialogue corpus (its rows have no turns)",
                         FIX_DATA)
    picked = [r for split in HELD_OUT for r in rows if r["split"] == split][:limit]
    if not picked:
        raise VoxlmError(f"{manifest}: no dialogues with held-out user voices (split test or "
                         "valid)", "synthesize more with voxlm synth dialogues --out DIR "
                         "--count 200 (about a quarter get held-out voices)")
    return picked


# ---------------------------------------------------------------- plots and report

def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def plot_turn_taking(path, generated, reference) -> Path:
    """Events per minute and mean durations, generated vs reference (TurnTakingStats)."""
    from matplotlib.figure import Figure  # no pyplot: Agg, the backend is left alone

    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    kinds = ("ipu", "pause", "gap", "overlap")
    x = np.arange(len(kinds) + 1)
    for offset, stats, label in ((-0.2, generated, "generated"), (0.2, reference, "reference")):
        per_min = [getattr(stats, k).per_min for k in kinds] + [stats.backchannels_per_min]
        left.bar(x + offset, per_min, 0.4, label=label)
        right.bar(x[:-1] + offset, [1000 * getattr(stats, k).mean_s for k in kinds], 0.4,
                  label=label)
    left.set_xticks(x, [*kinds, "backchannel"])
    left.set_ylabel("per minute")
    left.set_title("events per minute")
    right.set_xticks(x[:-1], kinds)
    right.set_ylabel("mean duration, ms")
    right.set_title("mean duration")
    left.legend(fontsize=8)
    return write_atomic(path, _png(fig))


def plot_latency(path, generated: list, reference: list) -> Path:
    """Histograms of response latency (answered turns), generated vs reference."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    bins = np.arange(-OVERLAP_S, WINDOW_S + LATENCY_BIN_S / 2, LATENCY_BIN_S)
    for values, label in ((generated, "generated"), (reference, "reference")):
        hits = [v for v in values if v is not None]
        ax.hist(hits, bins=bins, alpha=0.6,
                label=f"{label} ({len(hits)} of {len(values)} turns answered)")
    ax.axvline(0.0, color="gray", lw=1, ls="--")
    ax.set_xlabel("user speech end to model speech onset, s (negative: overlap)")
    ax.set_ylabel("turns")
    ax.set_title("Response latency")
    ax.legend(fontsize=8)
    return write_atomic(path, _png(fig))


def _f(value, spec="{:.2f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else spec.format(value)


def _stats_table(gen, ref) -> list:
    lines = ["| measure | generated | reference |", "|---|---|---|",
             f"| minutes | {gen.minutes:.2f} | {ref.minutes:.2f} |"]
    for kind in ("ipu", "pause", "gap", "overlap"):
        g, r = getattr(gen, kind), getattr(ref, kind)
        lines += [f"| {kind}s per min | {g.per_min:.1f} | {r.per_min:.1f} |",
                  f"| {kind} mean / median ms | {1000 * g.mean_s:.0f} / {1000 * g.median_s:.0f}"
                  f" | {1000 * r.mean_s:.0f} / {1000 * r.median_s:.0f} |"]
    labelled = ref.backchannels_per_min_manifest
    lines += [f"| modal gap ms | {_f(1000 * gen.gap_mode_s, '{:.0f}')} | "
              f"{_f(1000 * ref.gap_mode_s, '{:.0f}')} |",
              f"| transitions in overlap | {_f(100 * gen.overlap_transition_share, '{:.0f}%')} |"
              f" {_f(100 * ref.overlap_transition_share, '{:.0f}%')} |",
              f"| backchannels per min (heuristic) | {gen.backchannels_per_min:.2f} | "
              f"{ref.backchannels_per_min:.2f} (labelled: {_f(labelled)}) |"]
    return lines


def write_report(path, results: dict, gen_stats, ref_stats) -> Path:
    lat, qa = results["latency"], results["qa"]
    lines = ["# Dialogue evaluation", "",
             f"Model `{results['checkpoint']}`; corpus `{results['data']}`: {results['dialogues']}"
             f" dialogues with held-out user voices ({results['splits']}), "
             f"{results['reference_seconds']:.0f} s of reference. Each dialogue's user channel "
             "is replayed to the model frame by frame (`voxlm chat`'s runtime) and its channel "
             f"is generated live, up to {TAIL_S:.0f} s past the reference's end; seed "
             f"{results['seed']}" + (f", {results['seeds']} conversations per dialogue (seeds "
                                     "pooled in every generated figure; the reference counted "
                                     "once per conversation in QA)" if results["seeds"] > 1
                                     else "") +
             f", sampling {results['sampling']}" + (", LM with int8 weights (as served)"
                                                    if results.get("int8") else "") +
             ". Compute: "
             f"{_f(results['step_ms'], '{:.1f}')} ms per 80 ms frame.", "",
             "## Turn-taking", "",
             "dGSLM definitions (`voxlm/turntaking.py`); channel 0 is the same user audio on both "
             "sides, so the differences are the model's.", "",
             *_stats_table(gen_stats, ref_stats), "", "![turn-taking](turn_taking.png)", "",
             "## Response latency", "",
             f"User turns the reference answers ({lat['generated']['turns']}): time from the end "
             "of the user's speech (manifest) to the first onset of voice activity on channel 1 "
             f"within -{OVERLAP_S:g} s .. +{WINDOW_S:g} s; none there is a miss.", "",
             "| measure | generated | reference |", "|---|---|---|"]
    g, r = lat["generated"], lat["reference"]
    for key, label, spec in (("answered", "answered", "{}"), ("missed", "missed", "{}"),
                             ("median_s", "median s", "{:.2f}"), ("p90_s", "p90 s", "{:.2f}"),
                             ("mean_s", "mean s", "{:.2f}"),
                             ("overlap_share", "started in overlap", "{:.0%}")):
        lines.append(f"| {label} | {_f(g[key], spec)} | {_f(r[key], spec)} |")
    lines += ["", "![latency](latency.png)", "", "## Spoken QA", ""]
    if not qa["questions"]:
        lines += ["No QA questions among these dialogues.", ""]
    else:
        lines += [f"{qa['questions']} questions ({qa['excluded']} more left out: the reference "
                  "answer was interrupted). Whisper tiny.en transcribes channel 1 from the end "
                  "of the question to the next user turn; right when the transcript holds the "
                  "expected answer words (digits read as words). The text each channel meant "
                  "over the same window (the model's inner text; the reference's script) is "
                  "judged the same way: it tells a model that does not know the answer from one "
                  "that knows it and fails to say it, and the WER of the speech against that "
                  "text measures the saying (pooled over all answers, and the median of the "
                  "answers' own, which one transcript looping on a phrase cannot sway).", "",
                  "| channel | right (speech) | right (text meant) | questions | accuracy (speech)"
                  " | accuracy (text) | speech WER against its text (pooled / median) |",
                  "|---|---|---|---|---|---|---|"]
        for side in ("generated", "reference"):
            s = qa[side]
            lines.append(f"| {side} | {s['correct']} | {s['inner_correct']} | {qa['questions']} | "
                         f"{_f(100 * s['accuracy'], '{:.0f}%')} | "
                         f"{_f(100 * s['inner_accuracy'], '{:.0f}%')} | "
                         f"{_f(100 * s['speech_text_wer'], '{:.1f}%')} / "
                         f"{_f(100 * s.get('speech_text_wer_median', math.nan), '{:.0f}%')} |")
        by_kind = ", ".join(f"{k} {v['generated']}/{v['questions']} (text {v['generated_inner']}, "
                            f"reference {v['reference']})" for k, v in qa["by_kind"].items())
        if qa["echo_questions"]:
            lines += ["", f"Arithmetic questions whose numbers and operator the text meant restates"
                      f" (\"nine minus two is ...\": the question was heard): generated "
                      f"{qa['generated']['inner_echo']}/{qa['echo_questions']}, reference "
                      f"{qa['reference']['inner_echo']}/{qa['echo_questions']}."]
        if "heard_wer" in qa["generated"]:
            lines += ["", "The model's listen head wrote down the questions as it heard them "
                      f"(while asked and {HEARD_S:g} s after): WER against the questions "
                      f"{_f(100 * qa['generated']['heard_wer'], '{:.1f}%')}; the arithmetic "
                      f"questions' numbers and operator written down in "
                      f"{qa['generated']['heard_echo']}/{qa['echo_questions']}."]
        lines += ["", f"By kind, generated right / questions: {by_kind}.", "",
                  "| question | expected | generated inner text | generated transcript | "
                  "reference transcript |", "|---|---|---|---|---|"]
        for item in qa["items"][:10]:
            cells = [item["question"], " ".join(item["expected"]), item["generated_inner"] or "-",
                     item["generated"] or "-", item["reference"] or "-"]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
    lines += ["## Examples", "", *[f"- [{p}]({p})" for p in results["examples"]], "",
              f"Time: {results['seconds']:.0f} s.", ""]
    return write_atomic(path, "\n".join(lines))


# ---------------------------------------------------------------- the command

def run_dialogue_eval(report, checkpoint=None, codec=None, data="data/dialogues",
                      limit: int = DEFAULT_LIMIT, seed: int = 0, sampling=None,
                      progress: bool = True, judges=None, seeds: int = 1,
                      int8: bool = False) -> Path:
    """Generate a conversation for each held-out dialogue and measure it; -> report.md's path.

    checkpoint: dialogue model (run folder or file; None: shipped). codec: its codec instead of
    the recorded one. data: a `voxlm synth dialogues` folder. sampling: lm.generate
    SamplingOptions (None: the defaults). judges: metrics.Judges to reuse (Whisper). seeds:
    conversations generated per dialogue, pooled in every generated figure (run k of dialogue
    i uses seed + k * dialogues + i, so seeds=1 is seed + i); one seed's sampling can move the
    QA measures as much as a change of model does. int8: the LM's matrix products with int8
    weights, as `voxlm serve` runs it."""
    from tqdm import tqdm

    from ..audio import load_audio, save_audio
    from ..chat import ChatOptions, chat
    from ..dialogue import load_dialogue_model, word_dicts
    from ..lm.generate import SamplingOptions
    from ..turntaking import dialogue_stats

    began = time.perf_counter()
    report = Path(report)
    if report.exists() and not report.is_dir():
        raise VoxlmError(f"{report} exists and is not a folder", "pass a folder to --report")
    if limit < 1:
        raise VoxlmError(f"--limit {limit}", "pass 1 or more dialogues")
    if seeds < 1:
        raise VoxlmError(f"--seeds {seeds}", "pass 1 or more conversations per dialogue")
    rows = held_out_rows(data, limit)
    model = load_dialogue_model(checkpoint, codec)
    sampling = sampling or SamplingOptions()
    root = Path(data)
    plan = [(row, seed + k * len(rows) + i) for k in range(seeds) for i, row in enumerate(rows)]
    refs, ref_latencies, gens, per_dialogue, steps = [], [], [], [], []  # refs: one per row
    lat_gen, qa_pending = [], []
    for j, (row, row_seed) in enumerate(tqdm(plan, desc="dialogues", unit="dialogue",
                                             disable=not progress)):
        ends = [t["end"] for t in answered_user_turns(row)]
        if j < len(rows):  # the reference is read and measured once, whatever the seeds
            ref = load_audio(root / row["audio"], mono=False)  # [T, 2]
            if ref.ndim != 2 or ref.shape[1] != 2:
                raise VoxlmError(f"{root / row['audio']}: not a stereo dialogue",
                                 FIX_DATA)
            refs.append(ref)
            ref_latencies.append(response_latencies(ref, ends))
        ref, r = refs[j % len(rows)], ref_latencies[j % len(rows)]
        options = ChatOptions(max_seconds=len(ref) / SAMPLE_RATE + TAIL_S, sampling=sampling,
                              int8=int8)
        result = chat(model, ref[:, 0].copy(), options, seed=row_seed)
        gen = result.audio  # [N, 2]: the reference user channel, the model's channel
        gens.append(gen)
        steps.append(result.latency["step"]["mean_ms"])
        g = response_latencies(gen, ends)
        lat_gen += g
        items = qa_items(row)
        qa_pending.append(items)
        per_dialogue.append({"id": row["id"], "seed": row_seed, "split": row["split"],
                             "source": row.get("source"), "user_voice": row.get("user_voice"),
                             "reference_seconds": round(len(ref) / SAMPLE_RATE, 3),
                             "generated_seconds": round(len(gen) / SAMPLE_RATE, 3),
                             "user_turn_ends": ends, "latency_generated": g,
                             "latency_reference": r, "inner_text": result.text,
                             "inner_words": word_dicts(result.words)})
        if model.lm.config.listen:  # the user's words as its listen head wrote them down
            per_dialogue[-1]["heard_words"] = word_dicts(result.heard)
    examples = []
    for row, gen in list(zip(rows, gens))[:EXAMPLES]:
        name = f"examples/{row['id']}.wav"
        save_audio(report / name, gen)
        examples.append(name)
    qa = _qa_part([row for row, _ in plan], refs * seeds, gens, qa_pending, per_dialogue,
                  judges, progress)  # plan order: seed-major, so refs * seeds lines up
    gen_stats = dialogue_stats(gens)
    ref_stats = dialogue_stats(refs, rows)
    lat_ref = [v for latencies in ref_latencies for v in latencies]
    results = {
        "checkpoint": str(model.path) if model.path else "shipped", "data": str(root),
        "dialogues": len(rows), "seed": seed, "seeds": seeds, "int8": int8,
        "splits": ", ".join(f"{s} {sum(r['split'] == s for r in rows)}" for s in HELD_OUT),
        "sampling": f"audio temperature {sampling.temperature}, top-k {sampling.top_k}, "
                    f"top-p {sampling.top_p}; text temperature {sampling.text_temperature}, "
                    f"top-k {sampling.text_top_k}, top-p {sampling.text_top_p}; pad temperature "
                    f"{sampling.pad_temperature}",
        "reference_seconds": sum(len(r) for r in refs) / SAMPLE_RATE,
        "generated_seconds": sum(len(g) for g in gens) / SAMPLE_RATE,
        "step_ms": float(np.mean(steps)),
        "turn_taking": {"generated": _stats_dict(gen_stats), "reference": _stats_dict(ref_stats)},
        "latency": {"generated": latency_summary(lat_gen), "reference": latency_summary(lat_ref),
                    "window_s": [-OVERLAP_S, WINDOW_S]},
        "qa": qa, "examples": examples, "per_dialogue": per_dialogue}
    plot_turn_taking(report / "turn_taking.png", gen_stats, ref_stats)
    plot_latency(report / "latency.png", lat_gen, lat_ref)
    results["seconds"] = time.perf_counter() - began
    write_json(report / "results.json", strict_json(results))
    return write_report(report / "report.md", results, gen_stats, ref_stats)


def _qa_part(rows, refs, gens, pending, per_dialogue, judges, progress) -> dict:
    """Judge every QA question on both channels: counts, accuracy (of the speech, as Whisper
    hears it, and of the text the channel meant), by kind, and every item."""
    from tqdm import tqdm

    from .metrics import word_errors

    todo = [(k, item) for k, items in enumerate(pending) for item in items
            if not item["interrupted"]]
    excluded = sum(item["interrupted"] for items in pending for item in items)
    if todo and judges is None:
        from .metrics import Judges

        judges = Judges()
    items, heard = [], {}  # the reference's judgements, once per question whatever the seeds
    for k, item in tqdm(todo, desc="spoken QA", unit="question", disable=not progress):
        key = (rows[k]["id"], item["start"])
        if key not in heard:
            heard[key] = judge_qa(refs[k], [item], judges)[0]
        (gen,), ref = judge_qa(gens[k], [item], judges), heard[key]
        # the text each channel meant to say: the model's inner text, the reference's script
        meant = {"generated": per_dialogue[k]["inner_words"],
                 "reference": [w for w in rows[k].get("words", []) if w.get("channel") == 1]}
        x = {"id": rows[k]["id"], "seed": per_dialogue[k]["seed"], "question": item["question"],
             "kind": item["answer"].kind,
             "expected": list(item["answer"].words), "window_s": [item["start"], item["end"]],
             "generated": gen["transcript"], "generated_correct": gen["correct"],
             "reference": ref["transcript"], "reference_correct": ref["correct"]}
        for side, spoken in (("generated", gen), ("reference", ref)):
            inner = inner_text_in(meant[side], item["start"], item["end"])
            x[f"{side}_inner"] = inner
            x[f"{side}_inner_correct"] = answer_correct(inner, item["answer"])
            if item["answer"].echo:
                x[f"{side}_inner_echo"] = restates(inner, item["answer"])
            x[f"{side}_speech_errors"] = list(word_errors(inner, spoken["transcript"]))
        if "heard_words" in per_dialogue[k]:  # what the listen head wrote while it was asked
            start, end = item["asked"]
            x["heard"] = inner_text_in(per_dialogue[k]["heard_words"], start, end + HEARD_S)
            x["heard_errors"] = list(word_errors(item["question"], x["heard"]))
            if item["answer"].echo:
                x["heard_echo"] = restates(x["heard"], item["answer"])
        items.append(x)
    for entry in per_dialogue:
        entry["qa"] = [x for x in items if (x["id"], x["seed"]) == (entry["id"], entry["seed"])]
    echoed = [x for x in items if "generated_inner_echo" in x]
    out = {"questions": len(items), "excluded": excluded, "items": items, "by_kind": {},
           "echo_questions": len(echoed)}
    for side in ("generated", "reference"):
        right = sum(x[f"{side}_correct"] for x in items)
        inner = sum(x[f"{side}_inner_correct"] for x in items)
        errors, words = (sum(x[f"{side}_speech_errors"][i] for x in items) for i in (0, 1))
        each = [e / n for e, n in (x[f"{side}_speech_errors"] for x in items) if n]
        out[side] = {"correct": right, "accuracy": right / len(items) if items else math.nan,
                     "inner_correct": inner,
                     "inner_accuracy": inner / len(items) if items else math.nan,
                     "inner_echo": sum(x[f"{side}_inner_echo"] for x in echoed),
                     # Whisper's transcript of the channel against the text it meant to say
                     "speech_text_wer": errors / words if words else math.nan,
                     # per answer, its median: one looping transcript cannot sway it
                     "speech_text_wer_median": float(np.median(each)) if each else math.nan}
    listened = [x for x in items if "heard" in x]
    if listened:  # the listen head: the questions' words it wrote down, their numbers and sign
        errors, words = (sum(x["heard_errors"][i] for x in listened) for i in (0, 1))
        out["generated"]["heard_wer"] = errors / words if words else math.nan
        out["generated"]["heard_echo"] = sum(x.get("heard_echo", False) for x in listened)
    for kind in dict.fromkeys(x["kind"] for x in items):
        mine = [x for x in items if x["kind"] == kind]
        out["by_kind"][kind] = {"questions": len(mine),
                                "generated": sum(x["generated_correct"] for x in mine),
                                "generated_inner": sum(x["generated_inner_correct"] for x in mine),
                                "reference": sum(x["reference_correct"] for x in mine)}
    return out


def _stats_dict(stats) -> dict:
    out = {k: v for k, v in vars(stats).items() if k != "durations"}
    for kind in ("ipu", "pause", "gap", "overlap"):
        out[kind] = dict(vars(getattr(stats, kind)))
    return out
