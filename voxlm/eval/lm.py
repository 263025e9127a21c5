"""`voxlm eval lm`: how well the speech-text LM models speech, and what it can do with it.

    voxlm eval lm --report reports/lm --checkpoint runs/lm --data data/tokens --real data/realset

1. Validation loss per stream (text, audio = mean over codebooks, codebook 1) on the token
   shards' held-out splits, in the layout the LM was trained on (both directions for aligned)
   and in the speech-only continuation layout the zero-shot scores use.
2. Zero-shot spoken minimal pairs (`minimal_pairs.py`: sWUGGY-, sBLIMP- and tStoryCloze-like),
   spoken by held-out voices, encoded by the codec, laid out as speech continuation and scored
   by the LM's summed log-likelihood of the audio tokens: of every modelled codebook, and of
   codebook 1 alone. A pair counts as right when its good member scores higher (ties: half).
   tStoryCloze scores only the ending, given the story's codes.
3. TTS intelligibility (Whisper tiny.en WER), speaker similarity (Resemblyzer) and ASR WER on
   held-out synthetic voices and on the real Asterisk prompts (`--real`), through
   `voxlm.lm.speech` (imported when used; the rows say why when it cannot run).

REPORT/report.md      the tables, with the published peers for context (not the same tests)
REPORT/results.json   every number of the report
REPORT/pairs.jsonl    one row per pair: texts, voice, both scores
REPORT/zero_shot.png  accuracy per task (all codebooks, codebook 1) against the 50% chance line
REPORT/cache/         synthesized pair audio and its codes (per codec), reused by reruns
"""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..data import strict_json, write_atomic, write_json
from ..errors import VoxlmError
from .minimal_pairs import TASKS

DEFAULT_LIMIT = 200  # pairs per zero-shot task, streams per validation layout
DEFAULT_SPEECH = 50  # utterances per TTS / ASR set (each is generated frame by frame)
GOALS = {"swuggy": 0.70, "sblimp": 0.60, "tstorycloze": 0.65}  # issue 4's bars
TASK_NAMES = {"swuggy": "sWUGGY-like", "sblimp": "sBLIMP-like", "tstorycloze": "tStoryCloze-like"}
PEERS = ("GSLM sBLIMP 54.2; TWIST-1.3B sBLIMP 57.0, tStoryCloze 70.6; Slam (one GPU-day) "
         "sBLIMP 58.9, tStoryCloze 82.0")
LOGIT_BUDGET = 2 ** 25  # logits held at once (128 MB of float32): bounds frames per batch


# ---------------------------------------------------------------- loading

def default_lm_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "lm.safetensors"


def lm_file(checkpoint=None) -> Path:
    """The LM model file behind --checkpoint (a file or run folder; None: the shipped one)."""
    if checkpoint is None:
        if not default_lm_path().exists():
            raise VoxlmError("this copy of voxlm has no shipped LM yet",
                             "pass --checkpoint RUN_OR_FILE (from `voxlm lm train`)")
        return default_lm_path()
    path = Path(checkpoint)
    return path / "model.safetensors" if path.is_dir() else path


def lm_extra(path: Path) -> dict:
    """The `extra` dict an LM file was saved with (mode, tokenizer, codec_sha256, ...)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get("extra", "{}"))
    except Exception:  # load_lm has already said what is wrong with the file
        return {}


def check_codec(lm, codec, extra: dict, codec_sha: str):
    """The LM must model this codec's codes: its vocabulary, codebooks, and (when recorded)
    the codes of the codec its training tokens came from (that file, or one that keeps its
    codes: a decoder-only fine-tune). `codec_sha`: the sha256 of `codec`'s file."""
    from ..lm.tokenize_corpus import recorded_code_ids

    c, cc = lm.config, codec.config
    if cc.codebook_size > c.card or cc.n_q < c.n_q:
        raise VoxlmError(f"the codec ({cc.n_q} codebooks of {cc.codebook_size}) does not fit "
                         f"the LM ({c.n_q} codebooks of {c.card})",
                         "pass --codec the codec the LM's tokens were made with")
    trained = recorded_code_ids(extra.get("codec_sha256"), extra.get("codec_codes_of", []))
    if trained and not trained & {codec_sha, *codec.codes_of}:
        raise VoxlmError(f"the LM was trained on codes of another codec (sha256 "
                         f"{extra['codec_sha256'][:12]}, given {codec_sha[:12]})",
                         "pass --codec the codec its tokens were made with (tokens.json names it)")


# ---------------------------------------------------------------- scoring

class Scores(NamedTuple):
    total: np.ndarray  # [N] summed log p (nats) of every modelled codebook of the scored frames
    semantic: np.ndarray  # [N] the same for codebook 1 only
    frames: np.ndarray  # [N] scored frames


def _batches(lengths: list, per_frame: int) -> list:
    """Indices grouped by similar length, each group's padded logits within LOGIT_BUDGET."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    cap = max(1, LOGIT_BUDGET // per_frame)  # frames per batch
    groups, group = [], []
    for i in order:
        if group and (len(group) + 1) * lengths[i] > cap:
            groups.append(group)
            group = []
        group.append(i)
    return groups + [group] if group else groups


@torch.no_grad()
def score_codes(lm, items: list) -> Scores:
    """Log-likelihood of speech under the LM in the continuation layout.

    items: [(codes [K, T] ints, start)]: frames 0..start-1 are context (conditioned on, not
    scored), frames start..T-1 are scored. -> Scores, one entry per item."""
    from ..lm.data import collate
    from ..lm.streams import continuation

    c = lm.config
    layouts, starts, ends = [], [], []
    for codes, start in items:
        codes = np.asarray(codes)
        if not 0 <= start < codes.shape[-1]:
            raise VoxlmError(f"scored frames start at {start} of {codes.shape[-1]}",
                             "leave at least one frame to score")
        layouts.append(continuation(codes, c))  # [S, 1 + T + d]
        starts.append(start)
        ends.append(codes.shape[-1])
    total, semantic = np.zeros(len(items)), np.zeros(len(items))
    delays = torch.tensor(c.delays[1:1 + c.n_q])  # [n_q] of the model's codebooks
    device = next(lm.parameters()).device
    for group in _batches([x.shape[1] for x in layouts], c.text_card + c.n_q * c.card):
        tokens = collate([layouts[i] for i in group], c).to(device)  # [B, S, L]
        logits = lm(tokens).audio_logits[:, :, :-1].float()  # [B, n_q, L-1, card]
        targets = tokens[:, 1:1 + c.n_q, 1:]  # [B, n_q, L-1]
        logp = (logits.gather(-1, targets.clamp(max=c.card - 1)[..., None])[..., 0]
                - logits.logsumexp(-1))  # [B, n_q, L-1]
        # target column j + 1 holds frame j - delay_k of codebook k (continuation: start=1)
        frame = torch.arange(targets.shape[-1])[None, None] - delays[None, :, None]  # [1, n_q, L-1]
        lo = torch.tensor([starts[i] for i in group])[:, None, None]
        hi = torch.tensor([ends[i] for i in group])[:, None, None]
        keep = ((frame >= lo) & (frame < hi)).to(device) & (targets != c.card)  # [B, n_q, L-1]
        sums = (logp * keep).sum(-1).double().cpu()  # [B, n_q]
        total[group] = sums.sum(1).numpy()
        semantic[group] = sums[:, 0].numpy()
    return Scores(total, semantic, np.array(ends) - np.array(starts))


def pair_accuracy(good, bad) -> float:
    """Share of pairs where good > bad, ties counting half; NaN for no pairs."""
    good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
    if good.size == 0:
        return math.nan
    return float(np.mean((good > bad) + 0.5 * (good == bad)))


# ---------------------------------------------------------------- zero-shot pairs

def encode_cached(codec, codec_sha: str, paths: list, cache: Path) -> list:
    """Codes [K, T] int64 of each wav, cached as CACHE/codes/<codec sha>/<wav stem>.npy."""
    from ..audio import load_audio
    from ..codec.files import encode_audio

    folder = Path(cache) / "codes" / codec_sha[:16]
    out = []
    for path in paths:
        target = folder / f"{Path(path).parent.name}-{Path(path).stem}.npy"
        if target.exists():
            out.append(np.load(target).astype(np.int64))
            continue
        codes = encode_audio(codec, load_audio(path))  # [K, T]
        buffer = io.BytesIO()
        np.save(buffer, codes.astype(np.int16))
        write_atomic(target, buffer.getvalue())
        out.append(codes.astype(np.int64))
    return out


def zero_shot(lm, codec, codec_sha: str, pairs: list, cache, synth=None,
              progress: bool = True) -> tuple:
    """Speak, encode and score every pair. -> (rows: one dict per pair, summary: per task
    {"pairs", "accuracy", "accuracy_semantic", "shorter_wins", "by_kind": {kind: accuracy}},
    timing: seconds spent speaking and encoding, and scoring)."""
    from .minimal_pairs import held_out_synthesizer, synthesize

    synth = synth or held_out_synthesizer()
    voice = [synth.voices[i % len(synth.voices)] for i in range(len(pairs))]  # one per pair
    says = [(say, voice[i]) for i, p in enumerate(pairs) for say in (p.good, p.bad, p.context)
            if say is not None]
    began = time.perf_counter()
    paths = synthesize(says, synth, cache, progress)
    keys = list(dict.fromkeys((s.key, v) for s, v in says))
    codes = dict(zip(keys, encode_cached(codec, codec_sha, [paths[k] for k in keys], cache)))
    items = []
    for i, p in enumerate(pairs):
        context = codes[(p.context.key, voice[i])] if p.context is not None else None
        for say in (p.good, p.bad):
            own = codes[(say.key, voice[i])]
            if context is None:
                items.append((own, 0))
            else:  # the ending follows the story: [K, T_story + T_ending], story not scored
                items.append((np.concatenate([context, own], axis=1), context.shape[1]))
    prepared = time.perf_counter()
    scores = score_codes(lm, items)
    rows = []
    for i, p in enumerate(pairs):
        g, b = 2 * i, 2 * i + 1
        rows.append({"task": p.task, "kind": p.kind, "voice": voice[i], "good": p.good.text,
                     "bad": p.bad.text, "context": p.context.text if p.context else None,
                     "good_score": float(scores.total[g]), "bad_score": float(scores.total[b]),
                     "good_semantic": float(scores.semantic[g]),
                     "bad_semantic": float(scores.semantic[b]),
                     "good_frames": int(scores.frames[g]), "bad_frames": int(scores.frames[b])})
    summary = {}
    for task in dict.fromkeys(p.task for p in pairs):
        mine = [r for r in rows if r["task"] == task]
        summary[task] = {
            "pairs": len(mine),
            "accuracy": pair_accuracy([r["good_score"] for r in mine], [r["bad_score"] for r in mine]),
            "accuracy_semantic": pair_accuracy([r["good_semantic"] for r in mine],
                                               [r["bad_semantic"] for r in mine]),
            # what length alone gives: a summed log-likelihood tends to favour the shorter member
            "shorter_wins": pair_accuracy([-r["good_frames"] for r in mine],
                                          [-r["bad_frames"] for r in mine]),
            "by_kind": {k: pair_accuracy([r["good_score"] for r in mine if r["kind"] == k],
                                         [r["bad_score"] for r in mine if r["kind"] == k])
                        for k in dict.fromkeys(r["kind"] for r in mine)}}
    timing = {"speak_and_encode_s": prepared - began, "score_s": time.perf_counter() - prepared}
    return rows, summary, timing


# ---------------------------------------------------------------- validation loss

def eval_layouts(mode: str, extra: dict | None = None) -> list:
    """(name, LayoutConfig) pairs: continuation, then the training layout (aligned: both ways),
    with the text delays the LM was trained with (extra; the training defaults otherwise)."""
    from ..lm.data import LayoutConfig

    base = LayoutConfig()
    delays = {k: int((extra or {}).get(k, getattr(base, k)))
              for k in ("tts_delay", "asr_delay", "duplex_text_delay", "listen_delay")}
    out = [("continuation", LayoutConfig(mode="continuation"))]
    if mode == "aligned":
        out += [("aligned TTS (text leads)", LayoutConfig(mode="aligned", tts_share=1.0, **delays)),
                ("aligned ASR (audio leads)", LayoutConfig(mode="aligned", tts_share=0.0, **delays))]
    elif mode in ("interleave", "duplex"):
        out.append((mode, LayoutConfig(mode=mode, **delays)))
    return out


@torch.no_grad()
def validation_losses(lm, tokens_dir, limit: int | None = None, extra: dict | None = None) -> list:
    """Cross-entropy per stream on the held-out splits (valid, test) of token shards.

    extra: the LM file's extra (training mode and delays; mode "continuation" when absent).
    Each stream's whole layout is cut into windows of the LM's context, as training crops it.
    -> [{"split", "layout", "streams", "frames", "text", "audio", "semantic", "per_codebook"}]
    (nats per target; text None where the layout has no text targets)."""
    from dataclasses import replace

    from ..lm.data import LMData, TokenShards
    from ..lm.streams import text_card
    from ..lm.tokenize_corpus import recorded_code_ids

    shards = TokenShards(tokens_dir)
    c = lm.config
    if (c.card < shards.codebook_size or c.n_q > shards.n_q
            or c.text_card < text_card(shards.vocab_size)):
        raise VoxlmError(f"the LM (card {c.card}, n_q {c.n_q}, text_card {c.text_card}) does not "
                         f"fit the tokens in {shards.folder} ({shards.n_q} codebooks of "
                         f"{shards.codebook_size}, {shards.vocab_size} text ids)",
                         "pass --data the tokens folder the LM was trained on")
    trained = recorded_code_ids((extra or {}).get("codec_sha256"),  # the tokens must come
                                (extra or {}).get("codec_codes_of", []))  # from the LM's codes
    if trained and not trained & recorded_code_ids(shards.header["codec"]["sha256"],
                                                   shards.header["codec"].get("codes_of", [])):
        raise VoxlmError(f"{shards.folder} was tokenized with another codec than the LM's",
                         "pass --data the tokens folder the LM was trained on")
    splits = [s for s in ("valid", "test") if any(r["split"] == s for r in shards.items)]
    if not splits:
        raise VoxlmError(f"{shards.folder} has no items in split valid or test",
                         "tokenize a corpus with held-out voices (voxlm synth corpus makes them)")
    rows = []
    extra = extra or {}
    for split in splits:
        for name, layout in eval_layouts(extra.get("mode", "continuation"), extra):
            try:
                data = LMData(shards, c, replace(layout, split=split), batch_size=1)
            except VoxlmError:  # e.g. duplex without dialogues in this split
                continue
            sums, counts, streams, frames = layout_losses(lm, data, limit)
            means = (sums / counts.clamp(min=1)).tolist()
            audio = means[1:1 + c.n_q]
            rows.append({"split": split, "layout": name, "streams": streams,
                         "frames": frames, "text": means[0] if counts[0] > 0 else None,
                         "audio": float(np.mean(audio)), "semantic": means[1],
                         "per_codebook": audio})
            if c.listen:  # the listen head's loss on the user's words
                rows[-1]["listen"] = means[-1]
    return rows


@torch.no_grad()
def layout_losses(lm, data, limit: int | None = None) -> tuple:
    """Summed cross-entropy and real targets per stream of the first `limit` streams of `data`
    (an `LMData` of a held-out split): each stream's whole layout, its random choices seeded by
    its index (the same windows every call), cut into windows of the LM's context as training
    crops it. Also the validation of `voxlm lm train --valid-every` (`LMTask.validate`).
    -> (sums [1 + n_q] float64, counts [1 + n_q] float64, streams, frames), text first."""
    from ..lm.data import collate
    from ..lm.train import stream_losses

    c = lm.config
    device = next(lm.parameters()).device
    sums = torch.zeros(1 + c.n_q + int(c.listen), dtype=torch.float64)  # the listen head's last
    counts = torch.zeros(1 + c.n_q + int(c.listen), dtype=torch.float64)
    windows, frames = [], 0
    indices = range(len(data.streams))[:limit]
    for index in indices:
        layout_frames = data.layout_frames(index, np.random.default_rng([index, 0xE]))
        frames += layout_frames.shape[1]
        windows += [layout_frames[:, k:k + c.context]
                    for k in range(0, layout_frames.shape[1] - 1, c.context)]
    windows = [w for w in windows if w.shape[1] > 1]
    for group in _batches([w.shape[1] for w in windows], c.text_card + c.n_q * c.card):
        tokens = collate([windows[i] for i in group], c).to(device)  # [B, S, L]
        loss_sums, loss_counts = stream_losses(lm(tokens), tokens)
        sums += loss_sums.double().cpu()
        counts += loss_counts.cpu()
    return sums, counts, len(indices), frames


# ---------------------------------------------------------------- TTS and ASR

def speech_eval(lm_path, codec_path, texts: list, heldout: list, real_dir=None,
                limit: int = DEFAULT_SPEECH, seed: int = 0, judges=None) -> dict:
    """TTS intelligibility, speaker similarity and ASR WER, through `voxlm.lm.speech`.

    texts: sentences to speak; heldout: [(wav path, text)] in held-out voices; real_dir: a
    realset folder (manifest.jsonl). -> {name: {"utterances", "wer", "speaker_similarity"}},
    or {"skipped": reason} when the speech module or the LM's layout cannot do it.

    - tts: Whisper tiny.en WER of each sentence spoken by the LM (seed + i).
    - continuation: the LM has no voice conditioning, so speaker similarity is measured where a
      voice is given: Resemblyzer cosine between a held-out voice's utterance (the prompt) and
      the 3 s the LM continues it with.
    - asr held-out voices / asr real: the LM's own transcripts against the texts."""
    try:
        from ..lm import speech
    except ImportError as error:
        return {"skipped": f"voxlm.lm.speech is not available here ({error})"}
    from ..audio import load_audio
    from .metrics import Judges, word_errors

    model = speech.load_speech_lm(lm_path)
    if model.layout.mode not in ("", "aligned"):
        return {"skipped": f"the LM was trained in {model.layout.mode} mode, which has no TTS "
                           "or ASR direction (train with --mode aligned)"}
    codec, tokenizer = model.codec(codec_path), model.tokenizer()
    judges = judges or Judges()
    out, errors, words = {}, 0, 0
    for i, text in enumerate(texts[:limit]):
        audio = speech.synthesize(model.lm, codec, tokenizer, text, layout=model.layout,
                                  seed=seed + i).audio
        _, e, w = judges.word_errors(audio, text)
        errors, words = errors + e, words + w
    out["tts"] = {"utterances": len(texts[:limit]), "wer": errors / words if words else None}
    sims = []
    for i, (path, _) in enumerate(heldout[:limit]):
        prompt = load_audio(path)
        audio = speech.continue_speech(model.lm, codec, prompt, 3.0, layout=model.layout,
                                       seed=seed + i).audio
        sims.append(judges.speaker_similarity(prompt, audio[len(prompt):]) if
                    len(audio) > len(prompt) else math.nan)
    sims = [s for s in sims if not math.isnan(s)]
    out["continuation (held-out voice prompt)"] = {
        "utterances": len(heldout[:limit]), "wer": None,
        "speaker_similarity": float(np.mean(sims)) if sims else None}
    sets = [("asr held-out voices", heldout[:limit])]
    if real_dir is not None:
        sets.append(("asr real (Asterisk)", real_rows(real_dir, limit)))
    for name, rows in sets:
        errors = words = 0
        for path, text in rows:
            hyp = speech.transcribe(model.lm, codec, tokenizer, load_audio(path), model.layout)
            e, w = word_errors(text, hyp)
            errors, words = errors + e, words + w
        out[name] = {"utterances": len(rows), "wer": errors / words if words else None}
    return out


def real_rows(folder, limit: int | None = None) -> list:
    """[(wav path, text)] of a realset folder (voxlm synth realset)."""
    from ..data import read_manifest

    manifest = Path(folder) / "manifest.jsonl"
    if not manifest.is_file():
        raise VoxlmError(f"no manifest.jsonl in {folder}",
                         "make the real set with: voxlm synth realset --out data/realset")
    rows = [(Path(folder) / r["audio"], r["text"]) for r in read_manifest(manifest)]
    return rows[:limit] if limit else rows


# ---------------------------------------------------------------- report

def _fmt(value, spec="{:.3f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else spec.format(value)


def write_report(path, results: dict) -> Path:
    lines = ["# LM evaluation", "",
             f"Checkpoint `{results['checkpoint']}`, codec `{results['codec']}`.", ""]
    if results.get("validation"):
        lines += ["## Validation loss", "", "Cross-entropy in nats per target token on held-out "
                  "splits, in windows of the LM's context; audio is the mean over codebooks.", "",
                  "| split | layout | streams | frames | text | audio | codebook 1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["validation"]:
            lines.append(f"| {r['split']} | {r['layout']} | {r['streams']} | {r['frames']} | "
                         f"{_fmt(r['text'])} | {_fmt(r['audio'])} | {_fmt(r['semantic'])} |")
        lines.append("")
    zero = results.get("zero_shot") or {}
    if zero:
        lines += ["## Zero-shot spoken minimal pairs", "",
                  f"Voices: {results['voices']}. Each pair is scored by the summed log-likelihood "
                  "of its audio tokens in the speech-continuation layout (tStoryCloze: of the "
                  "ending, after the story); accuracy is the share of pairs whose good member "
                  "scores higher (chance 50%). 'Shorter wins' is the accuracy of length alone "
                  "(the member with fewer frames), the bias a summed score carries.", "",
                  "| task | pairs | accuracy, all codebooks % | accuracy, codebook 1 % | "
                  "shorter wins % | goal % |", "|---|---|---|---|---|---|"]
        for task, s in zero.items():
            lines.append(f"| {TASK_NAMES[task]} | {s['pairs']} | {_fmt(100 * s['accuracy'], '{:.1f}')}"
                         f" | {_fmt(100 * s['accuracy_semantic'], '{:.1f}')} | "
                         f"{_fmt(100 * s['shorter_wins'], '{:.1f}')} | {100 * GOALS[task]:.0f} |")
        lines += ["", "By phenomenon (all codebooks): " + "; ".join(
            f"{TASK_NAMES[t]}: " + ", ".join(f"{k} {_fmt(100 * a, '{:.0f}')}" for k, a in
                                             s["by_kind"].items())
            for t, s in zero.items() if t != "tstorycloze"), "",
                  f"Published spoken LMs, for context only (real speech, different tests): "
                  f"{PEERS}.", "", "![zero-shot accuracy](zero_shot.png)", ""]
    speech = results.get("speech")
    if speech is not None:
        lines += ["## TTS and ASR", ""]
        if "skipped" in speech:
            lines += [f"Not run: {speech['skipped']}.", ""]
        else:
            lines += ["| measure | utterances | WER % | speaker similarity |", "|---|---|---|---|"]
            for name, s in speech.items():
                wer = None if s.get("wer") is None else 100 * s["wer"]
                lines.append(f"| {name} | {s['utterances']} | {_fmt(wer, '{:.1f}')} | "
                             f"{_fmt(s.get('speaker_similarity'))} |")
            lines.append("")
    lines += [f"Time: {results['seconds']:.1f} s.", ""]
    return write_atomic(path, "\n".join(lines))


def plot_zero_shot(path, zero: dict) -> Path:
    """Bars of accuracy per task (all codebooks, codebook 1), chance line, goal markers."""
    from matplotlib.figure import Figure  # no pyplot: Agg, the backend is left alone

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    tasks = list(zero)
    x = np.arange(len(tasks))
    for offset, key, label in ((-0.2, "accuracy", "all codebooks"),
                               (0.2, "accuracy_semantic", "codebook 1")):
        values = [100 * zero[t][key] for t in tasks]
        bars = ax.bar(x + offset, values, 0.4, label=label)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, value), fontsize=8,
                        ha="center", xytext=(0, 2), textcoords="offset points")
    ax.plot(x, [100 * GOALS[t] for t in tasks], "k_", ms=30, mew=2, label="goal")
    ax.axhline(50, color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [f"{TASK_NAMES[t]}\n({zero[t]['pairs']} pairs)" for t in tasks])
    ax.set_ylim(0, 115)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy %")
    ax.legend(fontsize=8, loc="upper center", ncol=4, frameon=False)
    ax.set_title("Zero-shot spoken minimal pairs (held-out voices)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- the command

def run_lm_eval(report, checkpoint=None, codec=None, data=None, limit: int = DEFAULT_LIMIT,
                real=None, tasks=TASKS, speech: bool = True, speech_limit: int = DEFAULT_SPEECH,
                cache=None, seed: int = 0, progress: bool = True) -> Path:
    """Every part of the LM evaluation into the folder `report`; -> report.md's path.

    checkpoint: LM file or run folder (None: shipped). codec: codec file or run folder (None:
    the codec the LM's tokens were made with when that file is still there, else the shipped
    one). data: token shards for the validation loss (None: skipped). limit: pairs per task and
    streams per validation layout; speech_limit: utterances per TTS / ASR set. real: realset
    folder for real-speech ASR. tasks: zero-shot tasks to run (empty: none). speech: run the
    TTS / ASR part. cache: synthesized audio and codes (default REPORT/cache)."""
    from ..codec.model import load_codec
    from ..lm.model import load_lm
    from ..lm.tokenize_corpus import codec_file, sha256_bytes
    from .minimal_pairs import build_pairs, held_out_synthesizer

    began = time.perf_counter()
    report = Path(report)
    if report.exists() and not report.is_dir():
        raise VoxlmError(f"{report} exists and is not a folder", "pass a folder to --report")
    if limit < 1 or speech_limit < 1:
        raise VoxlmError(f"--limit {limit}, --speech-limit {speech_limit}", "use 1 or more")
    if real is not None and not (Path(real) / "manifest.jsonl").is_file():
        raise VoxlmError(f"no manifest.jsonl in {real}",
                         "make the real set with: voxlm synth realset --out data/realset")
    path = lm_file(checkpoint)
    lm = load_lm(path)
    extra = lm_extra(path)
    if codec is None:
        codec = _recorded_codec(extra, data)
    codec_path = codec_file(codec)
    codec_model = load_codec(codec_path)
    codec_sha = sha256_bytes(codec_path.read_bytes())  # also keys the cached codes
    check_codec(lm, codec_model, extra, codec_sha)
    cache = Path(cache) if cache is not None else report / "cache"
    results = {"checkpoint": str(path), "codec": str(codec_path), "mode": extra.get("mode"),
               "limit": limit, "seed": seed}
    if data is not None:
        results["validation"] = validation_losses(lm, data, limit, extra)
    pairs = build_pairs(tasks, limit, seed, cache=cache) if tasks else []
    synth = held_out_synthesizer() if pairs or speech else None
    if pairs:
        rows, summary, timing = zero_shot(lm, codec_model, codec_sha, pairs, cache, synth, progress)
        results.update(voices=synth.note, zero_shot=summary, zero_shot_timing=timing)
        write_atomic(report / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        plot_zero_shot(report / "zero_shot.png", summary)
    if speech:
        results["speech"] = _speech_part(path, codec_path, pairs, synth, cache, real,
                                         speech_limit, seed)
    results["seconds"] = time.perf_counter() - began
    write_json(report / "results.json", strict_json(results))
    return write_report(report / "report.md", results)


def _speech_part(lm_path, codec_path, pairs, synth, cache, real, limit, seed) -> dict:
    """Sentences (the grammatical sBLIMP-like ones and the story endings, none of them in any
    corpus) to speak, and the same sentences in held-out voices to transcribe."""
    from .minimal_pairs import blimp_pairs, story_pairs, synthesize

    sentences = [p.good for p in pairs if p.task in ("sblimp", "tstorycloze")]
    if not sentences:
        sentences = [p.good for p in blimp_pairs(limit, seed) + story_pairs(limit, seed)]
    sentences = sentences[:limit]
    voices = [synth.voices[i % len(synth.voices)] for i in range(len(sentences))]
    try:
        from ..lm import speech  # noqa: F401  (checked before synthesizing anything)
    except ImportError as error:
        return {"skipped": f"voxlm.lm.speech is not available here ({error})"}
    paths = synthesize(list(zip(sentences, voices)), synth, cache)
    heldout = [(paths[(s.key, v)], s.text) for s, v in zip(sentences, voices)]
    return speech_eval(lm_path, codec_path, [s.text for s in sentences], heldout, real, limit,
                       seed)


def _recorded_codec(extra: dict, data):
    """The codec file the LM's tokens were made with (its model file's extra, else the tokens
    header of `data`) when it is still there and unchanged; None (the shipped codec) else."""
    from ..lm.tokenize_corpus import sha256_bytes

    candidates = [extra.get("codec_path")]
    if data is not None:
        from ..lm.data import TokenShards

        candidates.append(TokenShards(data).header["codec"]["path"])
    for name in candidates:
        if name and Path(name).is_file():
            if not extra.get("codec_sha256") or \
                    sha256_bytes(Path(name).read_bytes()) == extra["codec_sha256"]:
                return Path(name)
    return None
