"""Crash safety: `voxlm codec train` and `voxlm lm tokenize` killed with SIGKILL at random
(seeded) moments resume to exactly what an uninterrupted run makes. Corpus synthesis killed
mid-way: tests/test_corpus.py::test_killed_run_resumes_without_duplicates_or_holes."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from voxlm.checkpoint import load_model, load_torch
from voxlm.data import read_manifest, write_manifest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 12  # the last one with the GAN losses (a GAN step takes about 2 s here)
TRAIN = ["codec", "train", "--config", "tiny", "--steps", STEPS, "--batch-size", 4,
         "--segment-frames", 8, "--adversarial-start", STEPS - 1, "--save-every", 2, "--log-every", 1,
         "--threads", 1, "--seed", 5, "--quiet"]
KILLS = 2  # each restart costs a few seconds of imports on this 2-core machine


def voxlm(*args) -> list:
    return [sys.executable, "-m", "voxlm", *map(str, args)]


def curve(run) -> list:
    """metrics.jsonl rows without the timing column (the one thing two runs may differ in)."""
    path = run / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append({k: v for k, v in json.loads(line).items() if k != "seconds_per_step"})
        except ValueError:  # a line the kill cut short
            pass
    return rows


def last_step(run) -> int:
    return max((row["step"] for row in curve(run)), default=0)


def test_codec_training_killed_at_random_moments_resumes_bit_exact(small_corpus, tmp_path):
    rng = random.Random(20240611)
    whole = subprocess.Popen(voxlm(*TRAIN, "--data", small_corpus, "--out", tmp_path / "whole"),
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "killed"
    killed_after = []
    for _ in range(KILLS):
        before = last_step(run)
        proc = subprocess.Popen(voxlm(*TRAIN, "--data", small_corpus, "--out", run), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and last_step(run) <= before and time.time() < deadline:
            time.sleep(0.01)  # this process has trained past where the last one died ...
        time.sleep(rng.uniform(0.0, 0.8))  # ... and dies at a random moment after that
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
        killed_after.append(last_step(run))
    final = subprocess.run(voxlm(*TRAIN, "--data", small_corpus, "--out", run), env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]
    print(f"codec train: killed after logged steps {killed_after}, resumed to step {STEPS}")
    assert len(set(killed_after)) == KILLS and max(killed_after) < STEPS

    exported = [load_model(folder / "model.safetensors", "codec")[0] for folder in (run, tmp_path / "whole")]
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[1])
    a, b = load_torch(tmp_path / "whole" / "train_state.pt"), load_torch(run / "train_state.pt")
    assert a["step"] == b["step"] == STEPS
    for part in ("modules", "optimizers"):
        for name in a[part]:
            flat_a, flat_b = _tensors(a[part][name]), _tensors(b[part][name])
            assert flat_a.keys() == flat_b.keys()
            assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), (part, name)
    rows = curve(run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "curve has holes or repeats"
    assert rows == curve(tmp_path / "whole"), "resumed losses differ from the uninterrupted run"
    assert not list(run.glob(".*.tmp")), "temp files of killed saves are cleared on resume"


def _tensors(obj, prefix="") -> dict:
    """Every tensor in a nested state dict, by path."""
    if torch.is_tensor(obj):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out = {}
    for key, value in items:
        out.update(_tensors(value, f"{prefix}/{key}"))
    return out


def test_tokenize_killed_mid_way_resumes_without_duplicates_or_holes(small_corpus, tmp_path):
    from voxlm.codec.model import Codec, codec_config
    from voxlm.codec.train import export_codec
    from voxlm.lm.tokenize_corpus import tokenize_corpus
    from voxlm.lm.tokenizer import train_tokenizer

    rows = read_manifest(small_corpus / "manifest.jsonl")
    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus / "audio", corpus / "audio")
    many = [{**rows[i % len(rows)], "id": f"{i:03d}"} for i in range(60)]  # 60 items, 4 files
    write_manifest(corpus / "manifest.jsonl", many)
    torch.manual_seed(0)
    codec = export_codec(Codec(codec_config("tiny")), tmp_path / "codec.safetensors")
    train_tokenizer([r["text"] for r in rows] * 8, 300, tmp_path / "text.model")
    reference = tokenize_corpus(corpus, tmp_path / "whole", codec, tmp_path / "text.model",
                                workers=1, progress=False)

    out, rng = tmp_path / "tokens", random.Random(11)
    cli = voxlm("lm", "tokenize", "--data", corpus, "--out", out, "--codec", codec,
                "--tokenizer", tmp_path / "text.model", "--workers", 1, "--quiet")
    done_at_kill = []
    for _ in range(2):
        target = len(list(out.glob("parts/*.npz"))) + rng.randint(3, 15)
        proc = subprocess.Popen(cli, env=ENV, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and len(list(out.glob("parts/*.npz"))) < target and time.time() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL and not (out / "codes.npy").exists()
        done_at_kill.append(len(list(out.glob("parts/*.npz"))))
    result = subprocess.run(cli, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"lm tokenize: killed with {done_at_kill} of 60 items done, resumed to 60")
    assert f"60 items ({60 - done_at_kill[-1]} encoded now)" in result.stdout
    assert (out / "codes.npy").read_bytes() == (reference.out / "codes.npy").read_bytes()
    assert (out / "index.jsonl").read_bytes() == (reference.out / "index.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in (out / "index.jsonl").open()]
    assert ids == [r["id"] for r in many], "index has holes or repeats"
    assert len(np.load(out / "codes.npy", mmap_mode="r")) == reference.frames
    assert not list(out.rglob(".*.tmp"))
