"""python benchmarks/dialogue_hearing.py --tokens data/qa_tokens --data data/qa
    --checkpoint voxlm/assets/dialogue.safetensors [--checkpoint C ...] [--limit 200]
    [--out reports/dialogue_hearing]

Does the dialogue model hear the sums it is asked? A teacher-forced measure, free of sampling
noise: every arithmetic question of the held-out dialogues (user voices never trained on, splits
test and valid) is laid out as in training (`streams.duplex`: the user's audio, the reference
assistant's text and audio), and at each word of the reference answer ("eight minus two is
six") the model's most likely text tokens, given everything before them, are compared with the
reference's. Words are scored whole (every token right) in four roles: the first number, the
operator and the second number restate what was heard; the result is what was worked out.
Chance is about 1 in 13 for a number. A model with a listen head (`lm train --listen-weight`)
is also scored on its transcript of the question's numbers and operator (the listen row).

--train-too scores dialogues of training user voices as well: what was learned at all, beside
what carries over to new voices. --text-alone also scores every sum's result with no speech at
all: each sum `voxlm synth answers` writes ("Eight minus two is six") alone in the model's text
stream at the dialogues' pace, audio not started (the samples of `lm train --text`): does the
model know the sums as text? Writes OUT/results.json and OUT/report.md, prints the table.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxlm.data import read_manifest, write_atomic, write_json  # noqa: E402
from voxlm.eval.dialogue import _find, expected_answer  # noqa: E402
from voxlm.eval.metrics import normalize_text  # noqa: E402
from voxlm.lm.data import LayoutConfig, TokenShards, line_word_ids  # noqa: E402
from voxlm.lm.speech import load_speech_lm  # noqa: E402
from voxlm.lm.streams import FRAME_RATE, duplex, listen_row, place_words, text_only  # noqa: E402
from voxlm.synth.text import every_sum  # noqa: E402

ROLES = ("first number", "operator", "second number", "result")
WORD_STEP_S = 0.32  # text-alone answers: the median step from one word of a reply to the next


def answer_roles(question: str, reply_words: list) -> dict:
    """{index in reply_words: role} for a reference reply "A op B is R" to an arithmetic
    question; {} for other questions or replies that do not restate it."""
    answer = expected_answer(question)
    if answer is None or answer.kind != "arithmetic":
        return {}
    said = _said(reply_words)
    start = _find(said, (*answer.echo, "is"))  # "eight minus two is", then the result
    if start < 0 or len(answer.echo) != 3:
        return {}
    first = start + 4
    return {**{start + k: ROLES[k] for k in range(3)},
            **{first + k: ROLES[3] for k, word in enumerate(answer.words)
               if said[first + k:first + k + 1] == [word]}}


def question_roles(question_words: list, answer) -> dict:
    """{index in the question's words: role} of its numbers and operator."""
    start = _find(_said(question_words), answer.echo)
    return {start + k: ROLES[k] for k in range(3)} if start >= 0 and len(answer.echo) == 3 else {}


def _said(words: list) -> list:
    """Each word normalised as the judge reads it ("7" -> "seven"), one string per word."""
    return [" ".join(normalize_text(w["w"])) for w in words]


def word_right(logits: torch.Tensor, row: np.ndarray, eow: int, ids: list) -> bool:
    """Every token of a word placed at `eow` (its TEXT_EOW_ID column) is the argmax of the
    logits one column before it. logits [T, V]; row [T] the text row."""
    columns = range(eow + 1, eow + 1 + len(ids))
    if columns[-1] >= len(row):
        return False
    return all(int(logits[c - 1].argmax()) == int(row[c]) for c in columns)


@torch.no_grad()
def score(checkpoint, shards: TokenShards, rows: dict, limit: int, splits=("test", "valid")) -> dict:
    speech = load_speech_lm(checkpoint)
    lm, c = speech.lm, speech.lm.config
    rate = shards.frame_rate
    listen_delay = int(speech.extra.get("listen_delay", LayoutConfig.listen_delay))
    counts = {"model": defaultdict(lambda: [0, 0]), "listen": defaultdict(lambda: [0, 0])}
    examples, done = [], 0
    items = [i for i, item in enumerate(shards.items)
             if item["split"] in splits and item["channels"] == 2
             and rows.get(item["id"], {}).get("source") == "qa"]
    for index in items[:limit]:
        item, row = shards.items[index], rows[shards.items[index]["id"]]
        user_codes, model_codes = shards.channel(index, 0), shards.channel(index, 1)
        words = {ch: shards.words(index, ch) for ch in (0, 1)}
        ids = {ch: [w["ids"] for w in words[ch]] for ch in (0, 1)}
        frames = duplex(user_codes, model_codes, words[1], ids[1], c, 0, rate)
        if frames.shape[1] > c.context:
            continue
        tokens = torch.from_numpy(frames)[None]
        heard = None
        if c.listen:
            heard = listen_row(words[0], ids[0], c, frames.shape[1], listen_delay, 0, rate)
            tokens = torch.cat([tokens, torch.from_numpy(heard)[None, None]], dim=1)
        out = lm(tokens)
        text_logits = out.text_logits[0].float()  # [T, V]
        placed = {1: place_words(words[1], ids[1], model_codes.shape[1], 1, rate)[0]}
        if c.listen:
            placed[0] = place_words(words[0], ids[0], user_codes.shape[1], 1 + listen_delay, rate)[0]
        done += 1
        turns = [t for t in row["turns"] if t["kind"] != "backchannel"]
        for q, reply in zip(turns, turns[1:]):
            if q["channel"] != 0 or reply["channel"] != 1:
                continue
            answer = expected_answer(q["text"])
            if answer is None or answer.kind != "arithmetic":
                continue
            reply_index = [k for k, w in enumerate(words[1])
                           if reply["start"] - 1e-3 <= w["start"] <= reply["end"] + 1e-3]
            roles = answer_roles(q["text"], [words[1][k] for k in reply_index])
            got = {}
            for k, role in roles.items():
                eow, word_ids = placed[1][reply_index[k]]
                right = word_right(text_logits, frames[0], eow, word_ids)
                counts["model"][role][0] += right
                counts["model"][role][1] += 1
                got[role] = right
            if c.listen:
                asked = [k for k, w in enumerate(words[0])
                         if q["start"] - 1e-3 <= w["start"] <= q["end"] + 1e-3]
                for k, role in question_roles([words[0][j] for j in asked], answer).items():
                    eow, word_ids = placed[0][asked[k]]
                    right = word_right(out.listen_logits[0].float(), heard, eow, word_ids)
                    counts["listen"][role][0] += right
                    counts["listen"][role][1] += 1
            if len(examples) < 12:
                examples.append({"id": item["id"], "question": q["text"], "reply": reply["text"],
                                 "right": got})
    table = {part: {role: {"right": r, "words": n, "accuracy": r / n if n else None}
                    for role, (r, n) in sorted(counts[part].items(), key=lambda kv: ROLES.index(kv[0]))}
             for part in counts if counts[part]}
    return {"checkpoint": str(checkpoint), "splits": list(splits), "dialogues": done,
            "listen_head": c.listen,
            "table": table, "examples": examples}


@torch.no_grad()
def score_text_alone(checkpoint, max_operand: int = 12) -> dict:
    """Every sum's result, the answer alone in the text stream: {"right", "words", "accuracy"}."""
    speech = load_speech_lm(checkpoint)
    lm, c, tokenizer = speech.lm, speech.lm.config, speech.tokenizer()
    right = total = 0
    for line in every_sum(max_operand):
        ids = line_word_ids(line, tokenizer)  # "A op B is" then the result's words
        timed = [{"start": 1.0 + WORD_STEP_S * k, "end": 1.0 + WORD_STEP_S * k}
                 for k in range(len(ids))]
        length = int((2.0 + WORD_STEP_S * len(ids)) * FRAME_RATE)
        frames = text_only(timed, ids, c, length)
        logits = lm(torch.from_numpy(frames)[None]).text_logits[0].float()
        placed = place_words(timed, ids, length, 1, FRAME_RATE)[0]
        right += all(word_right(logits, frames[0], *placed[k]) for k in range(4, len(ids)))
        total += 1
    return {"right": right, "words": total, "accuracy": right / total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=Path, required=True, help="tokens of a QA dialogue corpus")
    parser.add_argument("--data", type=Path, required=True, help="the corpus (its manifest's turns)")
    parser.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    parser.add_argument("--limit", type=int, default=200, help="QA dialogues per split group")
    parser.add_argument("--train-too", action="store_true",
                        help="also score dialogues of training user voices (split train)")
    parser.add_argument("--text-alone", action="store_true",
                        help="also score every sum's result as text alone (no speech)")
    parser.add_argument("--out", type=Path, default=Path("reports/dialogue_hearing"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shards = TokenShards(args.tokens)
    rows = {r["id"]: r for r in read_manifest(args.data)}
    groups = [("test", "valid")] + ([("train",)] if args.train_too else [])
    results = [score(cp, shards, rows, args.limit, g) for cp in args.checkpoint for g in groups]
    if args.text_alone:
        for cp in args.checkpoint:
            results.append({"checkpoint": str(cp), "splits": [], "dialogues": 0,
                            "table": {"text alone": {"result": score_text_alone(cp)}}})
    lines = ["# Does the dialogue model hear the sums?", "",
             f"`python benchmarks/dialogue_hearing.py --tokens {args.tokens} --data {args.data} "
             f"--limit {args.limit}`: teacher-forced, held-out user voices; a word is right when "
             "each of its tokens is the model's most likely one.", "",
             "| model | user voices | part | dialogues | " + " | ".join(ROLES) + " |",
             "|---|---|---|---|" + "---|" * len(ROLES)]
    for r in results:
        for part, roles in r["table"].items():
            cells = [f"{roles[k]['right']}/{roles[k]['words']} ({100 * roles[k]['accuracy']:.0f}%)"
                     if k in roles else "-" for k in ROLES]
            name = {"model": "answer text", "listen": "listen head (the question)"}.get(part, part)
            voices = {(): "none: every sum as text", ("train",): "trained on"}.get(
                tuple(r["splits"]), "held out")
            lines.append(f"| `{r['checkpoint']}` | {voices} | {name} | {r['dialogues']} | "
                         + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    write_json(args.out / "results.json", results)
    write_atomic(args.out / "report.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
