"""python benchmarks/codec_hearing.py --data data/qa --codec voxlm/assets/codec.safetensors
    [--codec C2 ...] [--teacher] [--train-dialogues 1200] [--out reports/codec_hearing]

Do the codec's codes tell which numbers a user asked about, in voices never trained on? The
dialogue model can only answer "what is eight minus two?" if the user's codes say "eight" in a
new voice. This measures it on the user channel of a `voxlm synth dialogues --qa` corpus:

- Every arithmetic question ("what is A op B?") is one example, labelled three ways: the first
  number A (13 classes), the operator (3) and the second number B (13).
- Features of the question's frames (its turn, from 80 ms before the start to 240 ms after the
  end), cut into SEGMENTS equal parts in time: per part, the normalised histogram of one
  codebook's codes (bag of codes), or the mean of a continuous state: the codec encoder's
  output before quantization projected into codebook 1's space (what codebook 1 rounds), and
  with --teacher the Whisper tiny.en encoder states codebook 1 is distilled from (the ceiling).
- A linear classifier per label and feature set (full-batch Adam, weight decay), trained on
  questions of training user voices (80% of those dialogues) and tested on the other 20% of
  the training voices' dialogues ("same voices") and on the user voices never trained on (splits
  test and valid: "new voices").

Writes OUT/results.json and OUT/report.md and prints the table. Chance: 1/13 for a number.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxlm.audio import load_audio  # noqa: E402
from voxlm.codec.files import pad_to_frames  # noqa: E402
from voxlm.codec.model import load_codec  # noqa: E402
from voxlm.data import read_manifest, write_atomic, write_json  # noqa: E402
from voxlm.eval.dialogue import expected_answer  # noqa: E402

SEGMENTS = 6  # equal parts of a question in time
BEFORE_S, AFTER_S = 0.08, 0.24  # s of context kept around a question turn
LABELS = ("first number", "operator", "second number")
NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve").split()
OPERATORS = ("plus", "minus", "times")


def questions(row: dict) -> list:
    """[(start s, end s, (A, op, B) class ids)] for the arithmetic questions of a dialogue."""
    out = []
    for turn in row["turns"]:
        answer = expected_answer(turn["text"]) if turn["channel"] == 0 else None
        if answer is None or answer.kind != "arithmetic" or len(answer.echo) != 3:
            continue
        a, op, b = answer.echo
        if a in NUMBERS and b in NUMBERS and op in OPERATORS:
            out.append((turn["start"], turn["end"],
                        (NUMBERS.index(a), OPERATORS.index(op), NUMBERS.index(b))))
    return out


def segment_means(states: np.ndarray, rate: float, start: float, end: float) -> np.ndarray:
    """states [T, D] at `rate` Hz -> [SEGMENTS * D]: the mean of each part of the span."""
    lo = max(0, int(np.floor((start - BEFORE_S) * rate)))
    hi = min(len(states), max(lo + SEGMENTS, int(np.ceil((end + AFTER_S) * rate))))
    return np.concatenate([part.mean(0) for part in np.array_split(states[lo:hi], SEGMENTS)])


@torch.inference_mode()
def codec_features(codec, audio: np.ndarray, spans: list, codebooks: tuple) -> dict:
    """{feature name: [questions, dim]} from one user channel."""
    x = torch.from_numpy(pad_to_frames(audio, codec.config.hop))[None, None]  # [1, 1, N]
    z = codec.encoder(x)  # [1, D, T]
    codes = codec.quantizer.encode(z)[0].numpy()  # [K, T]
    semantic = codec.quantizer.semantic_in(codec.quantizer._halves(z)[0])[0].T.numpy()  # [T, Dc] what codebook 1 rounds
    rate, size = codec.config.frame_rate, codec.config.codebook_size
    out = {}
    for k in codebooks:  # one-hot codes [T, size] once per dialogue; part means = histograms
        one_hot = np.eye(size, dtype=np.float32)[codes[k - 1]]
        out[f"codebook {k}"] = np.stack([segment_means(one_hot, rate, s, e) for s, e in spans])
    out["encoder, before codebook 1"] = np.stack([segment_means(semantic, rate, s, e)
                                                  for s, e in spans])
    return out


def fit_and_score(x_train, y_train, tests: dict, classes: int, steps: int = 400) -> dict:
    """Accuracy of a linear classifier on each test set (features standardised on train)."""
    torch.manual_seed(0)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-4
    x = torch.from_numpy((x_train - mean) / std)
    y = torch.from_numpy(y_train)
    model = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return {name: float((model(torch.from_numpy((xt - mean) / std)).argmax(-1)
                             == torch.from_numpy(yt)).float().mean())
                for name, (xt, yt) in tests.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a `voxlm synth dialogues --qa` corpus")
    parser.add_argument("--codec", action="append", required=True, help="codec file or run folder (repeat)")
    parser.add_argument("--teacher", action="store_true", help="also probe the Whisper teacher states")
    parser.add_argument("--train-dialogues", type=int, default=1200, help="training-voice dialogues used")
    parser.add_argument("--codebooks", default="1,2", help="codebooks probed one at a time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("reports/codec_hearing"))
    args = parser.parse_args(argv)
    codebooks = tuple(int(k) for k in args.codebooks.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [r for r in read_manifest(args.data / "manifest.jsonl") if questions(r)]
    train_rows = [r for r in rows if r["split"] == "train"][:args.train_dialogues]
    cut = int(0.8 * len(train_rows))
    groups = {"train": train_rows[:cut], "same voices": train_rows[cut:],
              "new voices": [r for r in rows if r["split"] != "train"]}
    codecs = {c: load_codec(c) for c in args.codec}
    for codec in codecs.values():
        codec.eval()
    teacher = None
    if args.teacher:
        from voxlm.codec.teacher import TEACHER_RATE, Teacher
        teacher = Teacher(threads=torch.get_num_threads())  # what --threads set

    features, labels = {}, {}  # features[(system, feature)][group] = [[dim]], labels[group] = [[3]]
    for group, group_rows in groups.items():
        for row in tqdm(group_rows, desc=f"features: {group}", unit="dialogue"):
            spans = [(s, e) for s, e, _ in questions(row)]
            labels.setdefault(group, []).extend(ids for _, _, ids in questions(row))
            user = load_audio(args.data / row["audio"], mono=False)[:, 0].copy()
            for name, codec in codecs.items():
                for feature, x in codec_features(codec, user, spans, codebooks).items():
                    features.setdefault((name, feature), {}).setdefault(group, []).extend(x)
            if teacher is not None:
                states = teacher.features(user)
                features.setdefault(("Whisper tiny.en", "teacher states"), {}).setdefault(
                    group, []).extend(segment_means(states, TEACHER_RATE, s, e) for s, e in spans)

    y = {group: np.array(v, dtype=np.int64) for group, v in labels.items()}
    results = []
    for (system, feature), by_group in features.items():
        x = {group: np.stack(v).astype(np.float32) for group, v in by_group.items()}
        row = {"system": system, "feature": feature}
        for k, label in enumerate(LABELS):
            tests = {g: (x[g], y[g][:, k]) for g in ("same voices", "new voices")}
            scores = fit_and_score(x["train"], y["train"][:, k], tests, 3 if k == 1 else 13)
            row.update({f"{label}, {g}": v for g, v in scores.items()})
        results.append(row)
        print(row, flush=True)

    counts = {g: len(v) for g, v in y.items()}
    lines = ["# Can the codes tell which sums were asked?", "",
             f"Questions: {counts['train']} to train (training voices), {counts['same voices']} "
             f"same voices, new dialogues; {counts['new voices']} in new voices. Chance: "
             "1/13 = 0.077 for a number, about 1/3 for the operator.", "",
             "| system | feature | first number: same / new voices | operator | second number |",
             "|---|---|---|---|---|"]
    for r in results:
        cells = [f"{r[f'{label}, same voices']:.3f} / {r[f'{label}, new voices']:.3f}" for label in LABELS]
        lines.append(f"| {r['system']} | {r['feature']} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"counts": counts, "results": results, "segments": SEGMENTS})
    write_atomic(args.out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
