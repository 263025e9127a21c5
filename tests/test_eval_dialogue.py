"""`voxlm eval dialogue` (voxlm/eval/dialogue.py): expected answers and their matching on real
Whisper-style strings, response latency on constructed audio, the whole report from a tiny
random duplex model over three synthesized dialogues (Whisper runs on the QA answers), and the
command's bad inputs (rows of docs/RELIABILITY.md's dialogue table)."""
import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from duplex_helpers import count_int8_quantizations, export_run, speech
from voxlm.audio import SAMPLE_RATE, load_audio
from voxlm.cli import main
from voxlm.data import read_manifest, write_manifest
from voxlm.eval.dialogue import (HEARD_S, OVERLAP_S, TAIL_S, WINDOW_S, answer_correct,
                                 answered_user_turns, expected_answer, inner_text_in,
                                 latency_summary, qa_items, response_latencies, restates)
from voxlm.eval.metrics import normalize_text
from voxlm.lm.generate import SamplingOptions
from voxlm.synth.dialogue import DialogueConfig, synthesize_dialogues
from voxlm.synth.text import FACTS, qa_pair
from voxlm.turntaking import dialogue_stats

torch.set_num_threads(1)

# seed 8 gives dialogue 0 a held-out (test) user voice asking two questions, dialogue 1 a
# training voice (left out of the evaluation), dialogue 2 a test voice chatting
CONFIG = DialogueConfig(seed=8, assistant_voice="espeak:en-us+m1", user_engines=("flite",),
                        engine_weights=(1.0,), qa_share=0.5, qa_exchanges=(2, 3),
                        chitchat_turns=(3, 4))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("dialogues")
    synthesize_dialogues(out, 3, CONFIG, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_dialogue_runs")
    return {"duplex": export_run(folder, "duplex"), "aligned": export_run(folder, "aligned")}


# ---------------------------------------------------------------- expected answers

def test_every_qa_pair_answer_is_right_and_wrong_ones_are_not():
    rng = random.Random(0)
    for _ in range(500):
        question, answer = qa_pair(rng, 12)
        expected = expected_answer(question)
        assert expected is not None, question
        assert answer_correct(answer, expected), (question, answer, expected)
        assert not answer_correct("I do not know.", expected)
    assert [expected_answer(q).words for q, _ in FACTS[:4]] == [("blue",), ("seven",), ("eight",),
                                                                ("paris",)]
    assert expected_answer("How old is your sister?") is None


@pytest.mark.parametrize("question,transcript,right", [
    # what Whisper tiny.en wrote for the corpus's own answers: digits, hyphens, misheard words
    ("How much is four plus nine?", "4 plus 9 is 13.", True),
    ("Can you tell me twelve times nine?", "12 times 9 is 108.", True),
    ("How much is eleven times four?", "11 times 4 is 44.", True),
    ("How much is eleven times four?", "11 times 4 is 40.", False),
    ("What is zero plus one?", "0 plus 1 is 1.", True),
    ("What is zero plus one?", "Zero plus one is two.", False),  # restating is not answering
    ("Can you count from fourteen to nineteen?", "14, 15, 16, 17, 18, 19.", True),
    ("Can you count from fourteen to nineteen?", "14, 15, 16, 18, 19.", False),
    ("How do you spell table?", "Table of spell T, A, B, L, E.", True),
    ("How do you spell window?", "window is spelled W I N D O W", True),
    ("How do you spell window?", "W-I-N-D-O-W.", True),
    ("How do you spell apple?", "Apple is spelled A, P, T, L, P.", False),
    ("What is the opposite of hot?", "the opposite of hottest cold.", True),
    ("How many hours are in a day?", "There are 24 hours in a day.", True),
    ("What comes after Monday?", "Monday.", False),
])
def test_answer_matching_on_real_transcripts(question, transcript, right):
    assert answer_correct(transcript, expected_answer(question)) is right


# ---------------------------------------------------------------- latency

def test_inner_text_of_a_window_is_judged_as_the_speech_is():
    words = [{"w": w, "start": t} for w, t in (("Hello", 0.2), ("Nine", 1.0), ("minus", 1.3),
                                               ("two", 1.6), ("is", 1.8), ("7", 2.0), ("Next", 3.0))]
    assert inner_text_in(words, 1.0, 3.0) == "Nine minus two is 7"  # start inclusive, end not
    assert inner_text_in(words, 2.5, None) == "Next" and inner_text_in(words, 5.0, None) == ""
    answer = expected_answer("What is nine minus two?")
    assert answer_correct(inner_text_in(words, 1.0, 3.0), answer)
    assert not answer_correct(inner_text_in(words, 0.0, 1.9), answer)
    assert restates(inner_text_in(words, 0.0, 1.9), answer)  # heard, not yet answered
    assert not restates("Nine plus two is eleven", answer) and not restates("7", answer)
    assert not restates("Paris", expected_answer("What is the capital of France?"))


def test_latency_equals_the_constructed_delay():
    rng = np.random.default_rng(0)
    ends = [1.0, 4.333, 8.05, 12.0, 18.5]
    delays = [0.237, -0.3, 1.5, None, 4.2]  # None: no answer within the window
    stereo = np.zeros((int(25 * SAMPLE_RATE), 2), np.float32)
    for end, delay in zip(ends, delays):
        a = int((end - 0.8) * SAMPLE_RATE)
        stereo[a:int(end * SAMPLE_RATE), 0] = 0.2 * rng.standard_normal(int(end * SAMPLE_RATE) - a)
        if delay is not None:
            b = int(round((end + delay) * SAMPLE_RATE))
            n = int(0.6 * SAMPLE_RATE)
            stereo[b:b + n, 1] = 0.3 * rng.standard_normal(n)
    b = int(13.0 * SAMPLE_RATE)  # speech 1 s after the turn at 12.0, but it began before the window
    stereo[int(11.0 * SAMPLE_RATE):b, 1] = 0.3 * rng.standard_normal(b - int(11.0 * SAMPLE_RATE))
    got = response_latencies(stereo, ends)
    for value, delay in zip(got, delays):
        if delay is None:
            assert value is None
        else:
            assert abs(value - delay) <= 0.01, (value, delay)
    summary = latency_summary(got)
    assert (summary["turns"], summary["answered"], summary["missed"]) == (5, 4, 1)
    assert summary["overlap_share"] == 0.25 and abs(summary["median_s"] - 0.87) < 0.02
    assert response_latencies(stereo, [8.05], window_s=1.0) == [None]  # 1.5 s is past it


# ---------------------------------------------------------------- the report

def test_report_from_a_tiny_model(corpus, runs, tmp_path, capsys):
    report = tmp_path / "report"
    code = main(["eval", "dialogue", "--report", str(report), "--checkpoint", str(runs["duplex"]),
                 "--data", str(corpus), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert f"report: {report / 'report.md'}" in capsys.readouterr().out
    for name in ("report.md", "results.json", "turn_taking.png", "latency.png"):
        assert (report / name).stat().st_size > 500, name
    results = json.loads((report / "results.json").read_text())
    rows = {r["id"]: r for r in read_manifest(corpus)}
    held = [i for i, r in rows.items() if r["split"] in ("test", "valid")]
    assert [d["id"] for d in results["per_dialogue"]] == held and len(held) == 2
    assert results["dialogues"] == 2 and results["examples"] == [f"examples/{i}.wav" for i in held]

    # the generated conversation: the reference user channel, the model's channel beside it
    for entry in results["per_dialogue"]:
        ref = load_audio(corpus / rows[entry["id"]]["audio"], mono=False)
        gen = load_audio(report / "examples" / f"{entry['id']}.wav", mono=False)
        assert ref.shape[0] / SAMPLE_RATE <= entry["generated_seconds"] <= \
            ref.shape[0] / SAMPLE_RATE + TAIL_S + 0.08
        assert np.abs(gen[:len(ref), 0] - ref[:len(gen), 0]).max() < 1e-3
        assert np.abs(gen[:, 1]).max() > 0.01  # the model made sound

    # reference latency: the manifest's own next assistant onset after each answered user turn
    for entry in results["per_dialogue"]:
        row = rows[entry["id"]]
        assert entry["user_turn_ends"] == [t["end"] for t in answered_user_turns(row)]
        assert len(entry["latency_generated"]) == len(entry["user_turn_ends"])
        for end, got in zip(entry["user_turn_ends"], entry["latency_reference"]):
            onsets = [t["start"] for t in row["turns"] if t["channel"] == 1
                      and end - OVERLAP_S <= t["start"] <= end + WINDOW_S]
            assert got is not None and abs(got - (onsets[0] - end)) < 0.05, (got, onsets, end)
    lat = results["latency"]["reference"]
    assert lat["turns"] >= 3 and lat["missed"] == 0 and -0.5 <= lat["median_s"] <= 1.0

    # turn-taking: the reference column is turntaking's own figure for those wavs
    ref_stats = dialogue_stats([corpus / rows[i]["audio"] for i in held])
    reference = results["turn_taking"]["reference"]
    assert reference["ipu"]["per_min"] == pytest.approx(ref_stats.ipu.per_min)
    assert results["turn_taking"]["generated"]["minutes"] == pytest.approx(
        sum(d["generated_seconds"] for d in results["per_dialogue"]) / 60, abs=1e-3)

    # spoken QA: the reference assistant channel is judged right (Whisper ran on it)
    qa = results["qa"]
    assert qa["questions"] + qa["excluded"] == 2 and qa["questions"] >= 1
    assert qa["reference"]["correct"] == qa["questions"], qa["items"]
    assert all(x["reference"] for x in qa["items"])  # a transcript, not an empty string
    assert 0 <= qa["generated"]["correct"] <= qa["questions"]
    # the text each channel meant: the reference's script holds every answer, and Whisper's
    # transcript of the reference is close to it; the model's inner text is the words it made
    assert qa["reference"]["inner_correct"] == qa["questions"], qa["items"]
    assert qa["reference"]["speech_text_wer"] < 0.5, qa["items"]
    own = sorted(e / n for e, n in (x["reference_speech_errors"] for x in qa["items"]))
    assert qa["reference"]["speech_text_wer_median"] == pytest.approx(float(np.median(own)))
    for x in qa["items"]:
        assert x["reference_speech_errors"][1] == len(normalize_text(x["reference_inner"])) > 0
        entry = next(d for d in results["per_dialogue"] if d["id"] == x["id"])
        start, end = x["window_s"]
        assert x["generated_inner"] == " ".join(
            w["w"] for w in entry["inner_words"] if start <= w["start"] and (end is None or w["start"] < end))
    assert 0 <= qa["generated"]["inner_correct"] <= qa["questions"]
    assert qa["reference"]["inner_echo"] == qa["echo_questions"] == sum(
        x["kind"] == "arithmetic" for x in qa["items"])  # the script restates every sum
    text = (report / "report.md").read_text()
    for part in ("## Turn-taking", "## Response latency", "## Spoken QA", "| reference | ",
                 "speech WER against its text"):
        assert part in text


def test_seeds_pool_more_conversations_of_the_same_dialogues(corpus, runs, tmp_path, capsys):
    """--seeds 2: every held-out dialogue twice, the first time exactly as --seeds 1 makes it,
    the second with other seeds; the reference is measured once."""
    results = {}
    for n in (1, 2):
        report = tmp_path / f"seeds{n}"
        assert main(["eval", "dialogue", "--report", str(report), "--checkpoint",
                     str(runs["duplex"]), "--data", str(corpus), "--seeds", str(n), "--seed", "3",
                     "--quiet"]) == 0, capsys.readouterr().err
        results[n] = json.loads((report / "results.json").read_text())
    one, two = results[1], results[2]
    held = len(one["per_dialogue"])
    assert two["seeds"] == 2 and two["dialogues"] == one["dialogues"] == held
    assert [d["seed"] for d in two["per_dialogue"]] == [3 + j for j in range(2 * held)]
    assert [d["id"] for d in two["per_dialogue"]] == [d["id"] for d in one["per_dialogue"]] * 2
    for a, b in zip(one["per_dialogue"], two["per_dialogue"]):  # the first seed is --seeds 1's
        assert (a["inner_text"], a["latency_generated"]) == (b["inner_text"], b["latency_generated"])
    assert two["latency"]["generated"]["turns"] == 2 * two["latency"]["reference"]["turns"]
    assert two["latency"]["reference"] == one["latency"]["reference"]
    assert two["turn_taking"]["reference"] == one["turn_taking"]["reference"]
    assert two["reference_seconds"] == one["reference_seconds"]
    assert two["qa"]["questions"] == 2 * one["qa"]["questions"]
    assert two["qa"]["reference"]["correct"] == 2 * one["qa"]["reference"]["correct"]
    for entry in two["per_dialogue"]:
        assert all((x["id"], x["seed"]) == (entry["id"], entry["seed"]) for x in entry["qa"])
    assert "2 conversations per dialogue" in (tmp_path / "seeds2" / "report.md").read_text()


def test_int8_evaluates_the_lm_as_served(corpus, runs, tmp_path, capsys, monkeypatch):
    """--int8: every conversation runs the LM with int8 weights, and the report says so."""
    quantized = count_int8_quantizations(monkeypatch)
    report = tmp_path / "int8"
    assert main(["eval", "dialogue", "--report", str(report), "--checkpoint", str(runs["duplex"]),
                 "--data", str(corpus), "--limit", "1", "--int8", "--quiet"]) == 0, \
        capsys.readouterr().err
    results = json.loads((report / "results.json").read_text())
    assert results["int8"] is True and len(quantized) == len(results["per_dialogue"]) == 1
    assert "int8 weights (as served)" in (report / "report.md").read_text()
    assert results["sampling"].endswith("text temperature 0.7, top-k 25, top-p 0.0; pad "
                                        f"temperature {SamplingOptions.pad_temperature}")


def test_a_listen_head_shows_what_the_model_heard(corpus, tmp_path, capsys):
    """A model with a listen head: the words it wrote down while each question was asked,
    their WER against the question, and whether a sum's numbers and operator were heard."""
    run = export_run(tmp_path, "duplex", listen=True)
    report = tmp_path / "report"
    assert main(["eval", "dialogue", "--report", str(report), "--checkpoint", str(run),
                 "--data", str(corpus), "--quiet"]) == 0, capsys.readouterr().err
    results = json.loads((report / "results.json").read_text())
    qa = results["qa"]
    assert qa["questions"] >= 1 and all("heard_words" in d for d in results["per_dialogue"])
    assert any(d["heard_words"] for d in results["per_dialogue"])
    rows = {r["id"]: r for r in read_manifest(corpus)}
    errors = words = 0
    for x in qa["items"]:
        entry = next(d for d in results["per_dialogue"] if d["id"] == x["id"])
        question = next(q for q in qa_items(rows[x["id"]]) if q["question"] == x["question"])
        start, end = question["asked"]
        assert x["heard"] == " ".join(w["w"] for w in entry["heard_words"]
                                      if start <= w["start"] < end + HEARD_S)
        assert x["heard_errors"][1] == len(normalize_text(x["question"]))
        assert ("heard_echo" in x) == (x["kind"] == "arithmetic")
        errors, words = errors + x["heard_errors"][0], words + x["heard_errors"][1]
    assert qa["generated"]["heard_wer"] == pytest.approx(errors / words)
    assert "listen head wrote down the questions" in (report / "report.md").read_text()


# ---------------------------------------------------------------- bad inputs

# id: (arguments with {d} the temp folder, {data} the corpus, {mono} a monologue corpus,
# {train} a corpus of training voices only, {run}/{aligned} model runs; words the line must hold)
CLI_ERRORS = {
    "eval-dialogue-data-missing": ("--data {d}/nothing --checkpoint {run}",
                                   ["nothing: no such folder", "voxlm synth dialogues"]),
    "eval-dialogue-no-manifest": ("--data {d}/partial --checkpoint {run}",
                                  ["partial: no manifest.jsonl", "voxlm synth dialogues"]),
    "eval-dialogue-not-dialogues": ("--data {mono} --checkpoint {run}",
                                    ["not a dialogue corpus", "voxlm synth dialogues"]),
    "eval-dialogue-no-held-out": ("--data {train} --checkpoint {run}",
                                  ["no dialogues with held-out user voices",
                                   "voxlm synth dialogues --out DIR --count 200"]),
    "eval-dialogue-limit-zero": ("--data {data} --checkpoint {run} --limit 0",
                                 ["--limit 0", "pass 1 or more dialogues"]),
    "eval-dialogue-seeds-zero": ("--data {data} --checkpoint {run} --seeds 0",
                                 ["--seeds 0", "pass 1 or more conversations per dialogue"]),
    "eval-dialogue-report-is-file": ("--data {data} --checkpoint {run} --report {d}/file.txt",
                                     ["exists and is not a folder", "pass a folder to --report"]),
    "eval-dialogue-not-duplex": ("--data {data} --checkpoint {aligned}",
                                 ["not a dialogue model", "--mode duplex"]),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_error(case, corpus, runs, tmp_path, capsys):
    mono = tmp_path / "mono"
    mono.mkdir()
    sf.write(mono / "a.wav", speech(0.5), SAMPLE_RATE)
    write_manifest(mono / "manifest.jsonl", [{
        "id": "a", "audio": "a.wav", "duration": 0.5, "text": "hello", "words": [],
        "speaker": "espeak:en-us+m1", "engine": "espeak", "split": "test"}])
    train = tmp_path / "train"
    shutil.copytree(corpus, train)
    write_manifest(train / "manifest.jsonl",
                   [r for r in read_manifest(corpus) if r["split"] == "train"])
    (tmp_path / "file.txt").write_text("in the way")
    (tmp_path / "partial" / "dialogues").mkdir(parents=True)  # a synthesis still running
    args, words = CLI_ERRORS[case]
    fill = {"d": tmp_path, "data": corpus, "mono": mono, "train": train, "run": runs["duplex"],
            "aligned": runs["aligned"]}
    argv = ["eval", "dialogue", "--quiet", *[a.format(**fill) for a in args.split()]]
    if "--report" not in argv:
        argv += ["--report", str(tmp_path / "report")]
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("voxlm: error: "), lines
    assert "; " in lines[0] and all(w.format(**fill) in lines[0] for w in words), (words, lines)
    assert not (tmp_path / "report").exists()


def test_every_case_is_a_row_of_the_table():
    from pathlib import Path

    table = (Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md").read_text()
    assert [c for c in CLI_ERRORS if f"`{c}`" not in table] == []
