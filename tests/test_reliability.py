"""Bad input everywhere: one case per row of the table in docs/RELIABILITY.md.

CLI rows run the real `python -m voxlm` and want a non-zero exit, a one-line `voxlm: error:`
that names the problem and the fix, and no traceback; library rows want a one-line VoxlmError
with the same words; "works" rows want the command to succeed."""
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voxlm.audio import SAMPLE_RATE
from voxlm.errors import VoxlmError

torch.set_num_threads(1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TABLE = Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md"


def tone(seconds=1.0, rate=SAMPLE_RATE, channels=1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def wav_bytes(seconds=1.0) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


ROW = {"id": "000", "audio": "audio/000.wav", "duration": 1.0, "text": "hello", "words": [],
       "speaker": "s1", "engine": "espeak", "split": "train"}
MANIFESTS = {  # folder name: manifest.jsonl text (None: no manifest at all)
    "m_missing": None,
    "m_empty": "\n\n",
    "m_badjson": '{"id": "000", "audio": \n',
    "m_list": json.dumps([ROW]) + "\n",
    "m_nofield": json.dumps({k: v for k, v in ROW.items() if k != "duration"}) + "\n",
    "m_type": json.dumps({**ROW, "duration": "1.0"}) + "\n",
    "m_bool": json.dumps({**ROW, "duration": True}) + "\n",
    "m_split": json.dumps({**ROW, "split": "training"}) + "\n",
    "m_words": json.dumps({**ROW, "words": [{"w": "hello", "start": "0"}]}) + "\n",
    "m_nan": json.dumps({**ROW, "duration": float("nan")}) + "\n",
    "m_outside": json.dumps({**ROW, "audio": "../../../etc/passwd"}) + "\n",
    "m_absolute": json.dumps({**ROW, "audio": "/etc/passwd"}) + "\n",
    "m_symlink": json.dumps({**ROW, "audio": "audio/link.wav"}) + "\n",
    "m_nul": json.dumps({**ROW, "audio": "audio/0\u0000.wav"}) + "\n",
    "m_deep": "[" * 50000 + "]" * 50000 + "\n",
    "m_emptyid": json.dumps({**ROW, "id": ""}) + "\n",
    "m_noaudio": json.dumps({**ROW, "audio": "audio/gone.wav"}) + "\n",
    "m_dupids": json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_corpus):
    """Every bad (and every odd but good) input of the table, made once."""
    from safetensors.torch import save_file

    from voxlm.checkpoint import save_model, save_torch_atomic, tensor_digest
    from voxlm.codec.model import Codec, codec_config
    from voxlm.codec.train import TRAINING_ONLY, export_codec

    d = tmp_path_factory.mktemp("reliability")
    w = {"d": d, "corpus": small_corpus}

    # audio
    sf.write(d / "ok.wav", tone(), SAMPLE_RATE)
    sf.write(d / "u8.wav", tone(rate=8000), 8000, subtype="PCM_U8")
    sf.write(d / "st44.wav", tone(rate=44100, channels=2), 44100)
    sf.write(d / "a.mp3", tone(rate=44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(d / "a.ogg", tone(rate=22050), 22050, format="OGG", subtype="VORBIS")
    sf.write(d / "f24.flac", tone(rate=48000), 48000, subtype="PCM_24")
    (d / "folder").mkdir()
    (d / "empty.wav").write_bytes(b"")
    data = wav_bytes()
    (d / "cut.wav").write_bytes(data[: len(data) // 2])
    (d / "header.wav").write_bytes(data[:44])
    (d / "text.wav").write_text("I am not audio.\n" * 20)
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    np.save(d / "codes.npy", np.zeros((4, 5), np.int16))
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        x = tone()
        x[100] = value
        sf.write(d / f"{name}.wav", x, SAMPLE_RATE, subtype="FLOAT")
    sf.write(d / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    sf.write(d / "long.wav", tone(3.0), SAMPLE_RATE)
    with open(d / "huge.wav", "wb") as f:  # a sparse 4 GB wav: 34 hours by its header
        f.write(data[:40] + struct.pack("<I", 4_000_000_000 - 44))
        f.truncate(4_000_000_000)
    (d / "afile").write_text("a file where a folder should be")

    # manifests
    for name, text in MANIFESTS.items():
        (d / name / "audio").mkdir(parents=True)
        sf.write(d / name / "audio" / "000.wav", tone(), SAMPLE_RATE)
        if text is not None:
            (d / name / "manifest.jsonl").write_text(text, encoding="utf-8")
    os.symlink(d / "ok.wav", d / "m_symlink" / "audio" / "link.wav")  # points outside the corpus
    (d / "m_binary").mkdir()
    (d / "m_binary" / "manifest.jsonl").write_bytes(b"\xff\xfe\x00\x81garbage\n")

    # model files
    torch.manual_seed(0)
    codec = Codec(codec_config("tiny"))
    tiny = export_codec(codec, d / "tiny.safetensors")
    state = {k: v for k, v in codec.state_dict().items() if not k.endswith(TRAINING_ONLY)}
    good = tiny.read_bytes()
    (d / "cut.safetensors").write_bytes(good[: len(good) * 2 // 3])
    flipped = bytearray(good)
    flipped[-100] ^= 0x01
    (d / "flip.safetensors").write_bytes(bytes(flipped))
    edited = good.replace(b'sample_rate\\": 16000', b'sample_rate\\": 96000', 1)
    assert edited != good
    (d / "edited.safetensors").write_bytes(edited)
    (d / "empty.safetensors").write_bytes(b"")
    save_model(d / "lm.safetensors", "lm", {"dim": 8}, {"w": torch.zeros(2)})
    name = next(iter(state))
    save_model(d / "shapes.safetensors", "codec", codec.config, {**state, name: torch.zeros(3, 3)})
    save_model(d / "fewer.safetensors", "codec", codec.config,
               {k: v for k, v in state.items() if k != name})
    from dataclasses import asdict
    save_model(d / "future.safetensors", "codec", {**asdict(codec.config), "colour": "blue"}, state)
    small = {"w": torch.zeros(2)}
    save_file(small, str(d / "version.safetensors"), metadata={
        "kind": "codec", "format_version": "2", "config": "{}", "sha256": tensor_digest(small)})
    save_file(small, str(d / "plain.safetensors"))
    save_file(small, str(d / "badconfig.safetensors"), metadata={  # as written before header sums
        "kind": "codec", "format_version": "1", "config": "{oops", "sha256": tensor_digest(small)})
    (d / "emptyrun").mkdir()

    # code files
    np.save(d / "range.npy", np.full((4, 5), 999, np.int16))
    np.save(d / "float.npy", np.zeros((4, 5), np.float32))
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "nopitch.npz", codes=np.zeros((4, 5), np.int16))
    np.savez(d / "shortpitch.npz", codes=np.zeros((4, 5), np.int16), pitch=np.zeros((4, 3), np.int16))
    np.savez(d / "floatpitch.npz", codes=np.zeros((4, 5), np.int16), pitch=np.zeros((4, 5)))

    # training states: one real step, then damaged copies
    _train(w, d / "run")
    states = {"flip": None, "cut": None, "emptystate": None, "config": None, "notastate": None}
    for name in states:
        shutil.copytree(d / "run", d / f"run_{name}")
    raw = (d / "run" / "train_state.pt").read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    (d / "run_flip" / "train_state.pt").write_bytes(bytes(flipped))
    (d / "run_cut" / "train_state.pt").write_bytes(raw[: len(raw) // 2])
    (d / "run_emptystate" / "train_state.pt").write_bytes(b"")
    from voxlm.checkpoint import load_torch
    other = load_torch(d / "run" / "train_state.pt")
    other["task"]["model_config"]["latent_dim"] = 48
    save_torch_atomic(d / "run_config" / "train_state.pt", other)
    save_torch_atomic(d / "run_notastate" / "train_state.pt", [1, 2, 3])
    return w


def _train(w, run, steps=1, batch_size=4):
    """One tiny-codec training run in this process (the library surface of `codec train`)."""
    from voxlm.codec.model import codec_config
    from voxlm.codec.train import CodecTask, CodecTrainConfig
    from voxlm.train import TrainConfig, Trainer

    task = CodecTask(w["corpus"], codec_config("tiny"),
                     CodecTrainConfig(batch_size=batch_size, segment_frames=8), progress=False)
    return Trainer(task, TrainConfig(steps=steps, save_every=1, threads=1), run, progress=False).run()


TRAIN = "codec train --config tiny --steps 2 --batch-size 4 --segment-frames 8 --threads 1 --quiet"

# id: (arguments after `voxlm`, with {d} the fixture folder; words the error must contain)
CLI_ERRORS = {
    "audio-missing": ("audio info {d}/nothing.wav", ["nothing.wav: no such file", "check the path"]),
    "audio-directory": ("audio info {d}/folder", ["is a directory", "pass a wav"]),
    "audio-empty": ("audio info {d}/empty.wav", ["empty (0 bytes)", "pass a wav"]),
    "audio-truncated": ("audio info {d}/cut.wav", ["truncated", "re-export or re-download"]),
    "audio-header-only": ("audio info {d}/header.wav", ["truncated", "re-export"]),
    "audio-text-file": ("audio info {d}/text.wav", ["not a readable audio file", "pass one of .wav"]),
    "audio-random-bytes": ("audio info {d}/random.wav", ["not a readable audio file", "pass one of"]),
    "audio-wrong-type": ("audio info {d}/codes.npy", ["codes.npy: not a readable audio file"]),
    "audio-nan": ("audio info {d}/nan.wav", ["1 NaN/inf samples", "fix or re-export"]),
    "audio-inf": ("audio info {d}/inf.wav", ["1 NaN/inf samples", "fix or re-export"]),
    "audio-zero-length": ("audio info {d}/zero.wav", ["zero length", "at least one sample"]),
    "audio-too-long": ("audio info {d}/long.wav --max-seconds 2", ["3 s long, over the 2 s limit",
                                                                  "cut it into shorter files"]),
    "audio-huge": ("audio info {d}/huge.wav", ["125000 s long, over the 3600 s limit",
                                               "cut it into shorter files"]),
    "audio-bad-limit": ("audio info {d}/ok.wav --max-seconds 0", ["admits no audio",
                                                                 "pass a positive limit"]),
    "audio-out-mp3": ("audio convert {d}/ok.wav {d}/out.mp3", ["cannot write '.mp3'", "use a .wav"]),
    "audio-out-blocked": ("audio convert {d}/ok.wav {d}/afile/out.wav", ["afile", "check the path"]),
    "manifest-missing": ("codec teacher --data {d}/m_missing", ["no such manifest",
                                                                "voxlm synth corpus"]),
    "manifest-empty": ("codec teacher --data {d}/m_empty", ["manifest is empty", "voxlm synth corpus"]),
    "manifest-bad-json": ("codec teacher --data {d}/m_badjson", ["manifest.jsonl:1: not valid JSON",
                                                                 "one JSON object"]),
    "manifest-not-object": ("codec teacher --data {d}/m_list", ["expected a JSON object, got list"]),
    "manifest-missing-field": ("codec teacher --data {d}/m_nofield", ["missing field 'duration'",
                                                                      "every row needs"]),
    "manifest-wrong-type": ("codec teacher --data {d}/m_type", ["field 'duration' should be a number, got str"]),
    "manifest-nan": ("codec teacher --data {d}/m_nan", ["duration nan", "finite number >= 0"]),
    "manifest-outside": ("codec teacher --data {d}/m_outside", ["points outside the corpus",
                                                                "relative to the manifest"]),
    "manifest-absolute": ("codec teacher --data {d}/m_absolute", ["'/etc/passwd' points outside"]),
    "manifest-audio-missing": ("codec teacher --data {d}/m_noaudio", ["gone.wav: no such file",
                                                                      "check the path"]),
    "checkpoint-truncated": ("codec encode {d}/ok.wav {d}/x.npy --checkpoint {d}/cut.safetensors",
                             ["not a readable model file", "truncated or corrupt"]),
    "checkpoint-bit-flip": ("codec encode {d}/ok.wav {d}/x.npy --checkpoint {d}/flip.safetensors",
                            ["failed its checksum", "copy or train it again"]),
    "checkpoint-wrong-kind": ("codec encode {d}/ok.wav {d}/x.npy --checkpoint {d}/lm.safetensors",
                              ["holds a 'lm' model, not a 'codec' one", "pass a codec checkpoint"]),
    "flag-bitrate-nan": ("codec encode {d}/ok.wav {d}/x.npy --checkpoint {d}/tiny.safetensors "
                         "--bitrate nan", ["bitrate nan is not a number of kbps", "choose one of"]),
    "flag-steps-zero": (TRAIN.replace("--steps 2", "--steps 0") + " --data {corpus} --out {d}/r0",
                        ["--steps is 0", "at least 1"]),
    "codec-train-decoder-only-alone": (TRAIN + " --data {corpus} --out {d}/r1 --decoder-only",
                                       ["--decoder-only needs", "pass --init"]),
    "codec-train-decoder-codebooks-alone": (TRAIN + " --data {corpus} --out {d}/r5 "
                                            "--decoder-codebooks 1",
                                            ["--decoder-codebooks 1 trains a decoder", "--decoder-only"]),
    "codec-export-voice-plain": ("codec export {d}/tiny.safetensors {d}/voice.safetensors --voice",
                                 ["--voice exports a voice decoder", "--decoder-codebooks 1"]),
    "synth-turns-no-speaker": ("synth turns --data {corpus} --out {d}/turns --speaker piper:nobody",
                               ["no speech of 'piper:nobody'", "e.g. piper:joe"]),
    "codec-train-init-other-config": (TRAIN.replace("tiny", "base") + " --data {corpus} --out "
                                      "{d}/r2 --init {d}/tiny.safetensors",
                                      ["holds a codec with another config", "--config"]),
    "codec-train-semantic-only-alone": (TRAIN + " --data {corpus} --out {d}/r6 --semantic-only",
                                        ["--semantic-only trains the semantic layers",
                                         "pass --init CODEC and --semantic-layers"]),
    "codec-train-semantic-layers-negative": (TRAIN + " --data {corpus} --out {d}/r7 "
                                             "--semantic-layers -1",
                                             ["--semantic-layers is -1", "pass 0 to 32"]),
    "codec-train-semantic-dim-odd": (TRAIN + " --data {corpus} --out {d}/r8 --semantic-layers 1 "
                                     "--semantic-dim 100",
                                     ["--semantic-dim is 100", "pass a multiple of 8"]),
    "codec-train-lr-zero": (TRAIN + " --data {corpus} --out {d}/r3 --lr 0",
                            ["--lr is 0.0", "positive learning rate"]),
    "codec-train-pitch-weight-nan": (TRAIN + " --data {corpus} --out {d}/r4 --pitch-weight nan",
                                     ["--pitch-weight is nan", "pass 0 or more"]),
    "eval-codec-compare-twice": ("eval codec --data {corpus} --report {d}/rep --checkpoint "
                                 "{d}/tiny.safetensors --compare {d}/tiny.safetensors --compare "
                                 "{d}/tiny.safetensors", ["both named voxlm[tiny]"]),
    "state-bit-flip": (TRAIN + " --data {corpus} --out {d}/run_flip",
                       ["train_state.pt failed its checksum", "restore a copy"]),
    "say-empty": (["synth", "say", "", "-o", "{d}/s.wav"], ["has no words to speak",
                                                             "letters or numbers"]),
    "say-punctuation": (["synth", "say", "?! ...", "-o", "{d}/s.wav"], ["has no words to speak"]),
    "say-emoji": (["synth", "say", "\U0001f642\U0001f642", "-o", "{d}/s.wav"], ["has no words to speak"]),
    "say-control-chars": (["synth", "say", "\x01\x02\x7f", "-o", "{d}/s.wav"], ["has no words to speak"]),
    "say-unknown-engine": ("synth say hello -o {d}/s.wav --voice nosuch:x",
                           ["unknown voice 'nosuch:x'", "voxlm synth voices"]),
    "say-unknown-voice": ("synth say hello -o {d}/s.wav --voice espeak:nosuch",
                          ["has no voice 'nosuch'", "espeak-ng --voices"]),
    "say-rate-zero": ("synth say hello -o {d}/s.wav --rate 0", ["speaking rate 0.0 is outside",
                                                                "such as 0.8"]),
    "say-out-mp3": ("synth say hello -o {d}/s.mp3", ["cannot write '.mp3'", "use a .wav"]),
    "corpus-minutes-zero": ("synth corpus --out {d}/c --minutes 0 --quiet", ["must be positive"]),
    "dialogues-qa-share-above-one": ("synth dialogues --out {d}/q --count 1 --qa-share 1.5",
                                     ["--qa-share 1.5 is outside 0..1", "--qa-share 0.4"]),
    "dialogues-qa-weights-bad": ("synth dialogues --out {d}/q --count 1 --qa-weights 1,x",
                                 ["--qa-weights 1,x", "four non-negative numbers", "4,1,1,2"]),
    "dialogues-user-shift-range": ("synth dialogues --out {d}/q --count 1 --user-shift 20",
                                   ["--user-shift 20.0", "up to 12 semitones"]),
}
ARGPARSE = {  # rejected by the parser itself: usage, then `voxlm ...: error: ...`, exit 2
    "flag-unknown-command": ("bogus", ["invalid choice: 'bogus'"]),
    "flag-missing-required": ("codec train", ["required: --data, --out"]),
    "flag-not-a-number": ("codec train --data x --out y --steps many", ["invalid int value: 'many'"]),
    "flag-bad-choice": ("lm train --data x --out y --mode tts", ["invalid choice: 'tts'"]),
}
CLI_WORKS = {  # id: (arguments, words in stdout)
    "works-8bit-pcm": ("audio info {d}/u8.wav", ["1.000 s"]),
    "works-44k-stereo": ("audio info {d}/st44.wav", ["1.000 s"]),
    "works-mp3": ("audio info {d}/a.mp3", ["a.mp3: 1.0"]),
    "works-ogg-vorbis": ("audio info {d}/a.ogg", ["a.ogg: 1.0"]),
    "works-24bit-flac-48k": ("audio info {d}/f24.flac", ["1.000 s"]),
    "works-say": (["synth", "say", "Hello there.", "-o", "{d}/hello.wav"], ["2 words"]),
}


def _library_cases():
    """id: (call taking the fixture dict, words the VoxlmError must contain)."""
    from voxlm.codec.files import decode_file, encode_file
    from voxlm.codec.model import load_codec
    from voxlm.data import read_manifest
    from voxlm.lm.tokenize_corpus import tokenize_corpus

    def manifest(name):
        return lambda w: read_manifest(w["d"] / name / "manifest.jsonl")

    def codec(name):
        return lambda w: load_codec(w["d"] / name)

    def decode(name):
        return lambda w: decode_file(w["d"] / name, w["d"] / "o.wav", w["d"] / "tiny.safetensors")

    def resume(name):
        return lambda w: _train(w, w["d"] / f"run_{name}", steps=2)

    return {
        "manifest-bool": (manifest("m_bool"), ["field 'duration' should be a number, got bool"]),
        "manifest-bad-split": (manifest("m_split"), ["split 'training' is not one of train"]),
        "manifest-bad-words": (manifest("m_words"), ["words[0] is not", "seconds >= 0"]),
        "manifest-symlink-outside": (manifest("m_symlink"), ["points outside the corpus"]),
        "manifest-nul-byte": (manifest("m_nul"), ["does not name a file", "audio/0001.wav"]),
        "manifest-deep-nesting": (manifest("m_deep"), ["nested too deeply"]),
        "manifest-binary": (manifest("m_binary"), ["not valid JSON"]),
        "manifest-empty-id": (manifest("m_emptyid"), ["field 'id' is empty", "its own id"]),
        "manifest-duplicate-ids": (lambda w: tokenize_corpus(w["d"] / "m_dupids", w["d"] / "tok",
                                                             codec=w["d"] / "tiny.safetensors"),
                                   ["repeats item ids", "its own id"]),
        "tokenize-no-manifest": (lambda w: tokenize_corpus(w["d"] / "folder", w["d"] / "tok2"),
                                 ["no manifest.jsonl", "voxlm synth corpus"]),
        "checkpoint-missing": (codec("nothing.safetensors"), ["model file not found", "check the path"]),
        "checkpoint-empty": (codec("empty.safetensors"), ["not a readable model file",
                                                          "truncated or corrupt"]),
        "checkpoint-header-edited": (codec("edited.safetensors"), ["failed its checksum"]),
        "checkpoint-format-version": (codec("version.safetensors"),
                                      ["format version 2, this voxlm reads 1", "re-export"]),
        "checkpoint-wrong-shape": (codec("shapes.safetensors"), ["has shape (3, 3), the config expects",
                                                                 "export it again"]),
        "checkpoint-missing-tensor": (codec("fewer.safetensors"), ["lacks 1 tensors", "export it again"]),
        "checkpoint-unknown-config": (codec("future.safetensors"), ["config this voxlm does not know",
                                                                    "colour"]),
        "checkpoint-not-safetensors": (codec("ok.wav"), ["not a readable model file"]),
        "checkpoint-no-metadata": (codec("plain.safetensors"), ["holds a 'unknown' model",
                                                                "pass a codec checkpoint"]),
        "checkpoint-bad-config-json": (codec("badconfig.safetensors"), ["unreadable config"]),
        "checkpoint-folder-without-model": (codec("emptyrun"), ["model file not found",
                                                                "model.safetensors"]),
        "codes-out-of-range": (decode("range.npy"),
                               ["values 999..999 do not fit this codec", "codec that encoded it"]),
        "codes-float": (decode("float.npy"),
                        ["codes are integers [K, T]", "voxlm codec encode"]),
        "codes-pickled-object": (decode("object.npy"),
                                 ["not a .npy code file", "voxlm codec encode"]),
        "codes-not-npy": (decode("ok.wav"), ["not a .npy code file"]),
        "codes-npz-without-pitch": (decode("nopitch.npz"),
                                    ["without `codes` and `pitch` arrays", "--pitch"]),
        "codes-pitch-frames": (decode("shortpitch.npz"),
                               ["is not 4 codes of 0..127 per frame (5 frames)", "--pitch"]),
        "codes-pitch-float": (decode("floatpitch.npz"),
                              ["not integers [4, T]", "--pitch"]),
        "codes-pitch-into-npy": (lambda w: encode_file(w["d"] / "ok.wav", w["d"] / "x.npy",
                                                       w["d"] / "tiny.safetensors", pitch=True),
                                 ["codes with pitch are written as .npz", "OUT.npz"]),
        "flag-bitrate-too-low-with-pitch": (lambda w: encode_file(
            w["d"] / "ok.wav", w["d"] / "x.npz", w["d"] / "tiny.safetensors", 0.3, pitch=True),
            ["below this codec's lowest with pitch, 0.425 kbps", "choose one of"]),
        "flag-bitrate-too-low": (lambda w: encode_file(w["d"] / "ok.wav", w["d"] / "x.npy",
                                                       w["d"] / "tiny.safetensors", 0.01),
                                 ["below this codec's lowest, 0.075 kbps", "choose one of"]),
        "flag-batch-zero": (lambda w: _train(w, w["d"] / "r1", batch_size=0), ["--batch-size is 0",
                                                                               "at least 1"]),
        "state-truncated": (resume("cut"), ["not a readable training state", "delete it to restart"]),
        "state-empty": (resume("emptystate"), ["not a readable training state"]),
        "state-other-config": (resume("config"), ["holds a codec with a different config",
                                                  "same --config"]),
        "state-not-a-state": (resume("notastate"), ["is not a voxlm training state", "new --out"]),
    }


def run_cli(args, w) -> subprocess.CompletedProcess:
    args = args.split() if isinstance(args, str) else args  # a list where an argument has spaces
    args = [a.format(d=w["d"], corpus=w["corpus"]) for a in args]
    return subprocess.run([sys.executable, "-m", "voxlm", *args], capture_output=True, text=True,
                          env=ENV, timeout=120)


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_error(case, world):
    args, words = CLI_ERRORS[case]
    result = run_cli(args, world)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()  # progress bars may come first
    errors = [line for line in lines if line.startswith("voxlm")]
    assert errors == lines[-1:] and errors[0].startswith("voxlm: error: ") and "; " in errors[0], lines
    assert all(word in errors[0] for word in words), (words, errors[0])


@pytest.mark.parametrize("case", sorted(ARGPARSE))
def test_cli_flag_error(case, world):
    args, words = ARGPARSE[case]
    result = run_cli(args, world)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error: " in last and all(word in last for word in words), last


@pytest.mark.parametrize("case", sorted(CLI_WORKS))
def test_cli_works(case, world):
    args, words = CLI_WORKS[case]
    result = run_cli(args, world)
    assert result.returncode == 0, result.stderr
    assert all(word in result.stdout for word in words), result.stdout


LIBRARY = _library_cases()


@pytest.mark.parametrize("case", sorted(LIBRARY))
def test_library_error(case, world):
    call, words = LIBRARY[case]
    with pytest.raises(VoxlmError) as info:
        call(world)
    message = str(info.value)
    assert "\n" not in message and "; " in message, message  # the problem; the fix
    assert all(word in message for word in words), (words, message)


def test_debug_flag_shows_the_traceback(world):
    result = run_cli(f"--debug audio info {world['d']}/nothing.wav", world)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "VoxlmError: " in result.stderr


def test_a_corrupt_state_is_left_alone_not_restarted(world):
    """After the refusals above, the damaged states are still there and nothing trained over them."""
    for name in ("flip", "cut", "emptystate", "config", "notastate"):
        run = world["d"] / f"run_{name}"
        assert (run / "train_state.pt").exists()
        curve = run / "metrics.jsonl"
        rows = [json.loads(line) for line in curve.open()] if curve.exists() else []
        assert all(row["step"] <= 1 for row in rows), name


def test_every_case_is_a_row_of_the_table():
    text = TABLE.read_text()
    cases = [*CLI_ERRORS, *ARGPARSE, *CLI_WORKS, *LIBRARY, "debug-traceback"]
    missing = [case for case in cases if f"`{case}`" not in text]
    assert not missing, f"docs/RELIABILITY.md lacks rows for {missing}"
    print(f"bad-input table: {len(cases)} cases")
