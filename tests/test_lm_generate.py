"""Generation on the LM (lm/speech.py) and its commands: TTS with text forcing, ASR with audio
forcing, continuation in each training layout, seeds, checkpoint metadata, CLI end to end, errors.
A tiny random-weight LM and tiny codec exported to files, so everything runs for real, fast."""
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from voxlm.audio import load_audio, save_audio
from voxlm.cli import main
from voxlm.codec.files import decode_codes, encode_audio
from voxlm.codec.model import Codec, codec_config, load_codec
from voxlm.codec.train import export_codec
from voxlm.errors import VoxlmError
from voxlm.lm.data import MOSHI_DELAY, LayoutConfig
from voxlm.lm.model import LM, TEXT_EOW_ID, TEXT_PAD_ID, lm_config, save_lm
from voxlm.lm.speech import (SpeechLayout, TTSOptions, check_voice, continue_speech,
                             default_lm_path, load_speech_lm, synthesize, transcribe,
                             transcribe_frames)
from voxlm.lm.streams import TEXT_OFFSET, from_aligned, from_continuation, text_card, tokenize_words
from voxlm.lm.tokenize_corpus import FORMAT_VERSION, sha256_bytes
from voxlm.lm.tokenizer import train_tokenizer
from voxlm.lm.train import LMTask, LMTrainConfig

torch.set_num_threads(1)
TTS_DELAY, ASR_DELAY = 4, 3  # frames; stored in the model file and read back
HOP = 1280  # samples per codec frame
TEXT = "the cat sat on the mat"
SENTENCES = ["the cat sat on the mat", "hello there how are you", "a dog ran to the park",
             "we like tea and cake", "one two three four five six"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A run folder (model.safetensors + tokenizer.model, trained in aligned mode), the codec
    file it names, and a 1.5 s wav."""
    root = tmp_path_factory.mktemp("lm_generate")
    torch.manual_seed(0)
    tokens = root / "tokens"  # stands in for a tokens folder: its tokenizer and header
    tokens.mkdir()
    tokenizer = train_tokenizer(SENTENCES * 10, 300, tokens / "tokenizer.model")
    codec_path = export_codec(Codec(codec_config("tiny")), root / "codec.safetensors")
    lm = LM(replace(lm_config("tiny"), text_card=text_card(tokenizer.vocab_size)))
    header = {"frame_rate": 12.5,
              "codec": {"path": str(codec_path), "sha256": sha256_bytes(codec_path.read_bytes())},
              "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                            "sha256": sha256_bytes(tokenizer.model_proto)}}
    layout = LayoutConfig(mode="aligned", tts_delay=TTS_DELAY, asr_delay=ASR_DELAY)
    # a one-item tokens folder without a valid split (for `lm-train-no-valid-split`)
    (tokens / "tokens.json").write_text(json.dumps({**header, "format_version": FORMAT_VERSION,
                                                    "n_q": 4, "codebook_size": 64}))
    (tokens / "index.jsonl").write_text(json.dumps({"id": "a", "split": "train", "frames": 3,
                                                    "channels": 1, "offset": 0, "words": []}) + "\n")
    np.save(tokens / "codes.npy", np.zeros((3, 4), np.int16))
    task = SimpleNamespace(shards=SimpleNamespace(header=header, folder=tokens), lm=lm,
                           config=LMTrainConfig(layout=layout))
    run = root / "run"
    LMTask.export(task, run)  # what training writes: model.safetensors + tokenizer.model
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    wav = root / "speech.wav"
    save_audio(wav, (0.3 * np.sin(2 * np.pi * 180 * t) * (rng.random(t.size) > 0.1)).astype(np.float32))
    return {"root": root, "run": run, "codec": codec_path, "wav": wav, "header": header,
            "tokens": tokens}


@pytest.fixture(scope="module")
def model(files):
    model = load_speech_lm(files["run"])
    return model, model.codec(), model.tokenizer()


def test_checkpoint_metadata_read_back(files, model):
    speech, codec, tokenizer = model
    assert speech.layout == SpeechLayout("aligned", TTS_DELAY, ASR_DELAY, 12.5)
    assert codec.config == codec_config("tiny")  # the codec the file names, found by itself
    assert tokenizer.vocab_size == files["header"]["tokenizer"]["vocab_size"]
    older = files["root"] / "older.safetensors"  # a file from before the delays were stored
    save_lm(older, speech.lm, extra={"mode": "aligned"})
    assert load_speech_lm(older).layout == SpeechLayout("aligned", MOSHI_DELAY, MOSHI_DELAY)
    with pytest.raises(VoxlmError, match="no tokenizer.model beside"):
        load_speech_lm(older).tokenizer()
    with pytest.warns(UserWarning, match="not the codec"):  # another codec than the tokens'
        other = export_codec(Codec(codec_config("tiny")), files["root"] / "other.safetensors")
        speech.codec(other)
    # a decoder-only fine-tune of the tokens' codec (new file, the same codes) is accepted
    tuned = load_codec(files["header"]["codec"]["path"])
    tuned.codes_of = (files["header"]["codec"]["sha256"],)
    with torch.no_grad():
        tuned.decoder.inp.bias.add_(0.1)
    tuned_file = export_codec(tuned, files["root"] / "tuned.safetensors")
    assert load_codec(tuned_file).codes_of == tuned.codes_of  # the file keeps the record
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        speech.codec(tuned_file)


def test_tts_forces_the_text_and_speaks_it(model):
    speech, codec, tokenizer = model
    c = speech.lm.config
    options = TTSOptions(max_pause=0.4, tail=1.0)
    out = synthesize(speech.lm, codec, tokenizer, TEXT, layout=speech.layout, options=options,
                     seed=0)
    words = tokenize_words([{"w": w} for w in TEXT.split()], tokenizer)
    # text forcing: the text row holds exactly the words' tokens, each run after an EOW
    assert from_aligned(out.frames, c, -TTS_DELAY).words == words
    text = out.frames[0, 1:]
    starts = np.flatnonzero((text[1:] >= TEXT_OFFSET) & (text[:-1] < TEXT_OFFSET)) + 1
    assert (text[starts - 1] == TEXT_EOW_ID).all() and len(starts) == len(words)
    assert set(text[text < TEXT_OFFSET].tolist()) <= {TEXT_PAD_ID, TEXT_EOW_ID}
    # the audio lags the text by the delay the model was trained with: "not started" before it
    assert (out.frames[1:1 + c.n_q, :1 + TTS_DELAY] == c.audio_pad_id).all()
    assert (out.frames[1, 1 + TTS_DELAY:] < c.card).all()
    # length: at least one frame per text column, at most every pause used and the whole tail
    tokens = sum(1 + len(w) for w in words)
    pause, tail = round(0.4 * 12.5), round(1.0 * 12.5)
    assert tokens * HOP <= len(out.audio) <= (tokens + len(words) * pause + tail) * HOP
    assert len(out.audio) % HOP == 0 and out.text == TEXT
    # the audio streamed frame by frame is the decode of the generated codes
    codes = from_aligned(out.frames, c, -TTS_DELAY).codes  # [n_q, T]
    assert codes.shape[1] >= len(out.audio) // HOP
    offline = decode_codes(codec, codes[:, :len(out.audio) // HOP])
    np.testing.assert_allclose(out.audio, offline, atol=1e-4)


def test_tts_pause_limit_places_words_back_to_back(model):
    speech, codec, tokenizer = model
    out = synthesize(speech.lm, codec, tokenizer, "hello there", layout=speech.layout,
                     options=TTSOptions(max_pause=0.0, tail=0.5), seed=0)
    expected = []
    for word in tokenize_words([{"w": "hello"}, {"w": "there"}], tokenizer):
        expected += [TEXT_EOW_ID] + [t + TEXT_OFFSET for t in word]
    row = out.frames[0]
    assert row[0] == speech.lm.config.text_start_id
    assert row[1:1 + len(expected)].tolist() == expected
    assert (row[1 + len(expected):] == TEXT_PAD_ID).all()


def test_asr_forces_the_audio_and_returns_text(files, model):
    speech, codec, tokenizer = model
    c = speech.lm.config
    audio = load_audio(files["wav"])
    out = transcribe_frames(speech.lm, codec, tokenizer, audio, speech.layout)
    codes = encode_audio(codec, audio)[:c.n_q]  # [n_q, T]
    got = from_aligned(out.frames, c, ASR_DELAY).codes
    np.testing.assert_array_equal(got, codes)  # every input code, in order, nothing else
    assert (out.frames[0, 1:ASR_DELAY] == TEXT_PAD_ID).all()  # text lags: pads before the delay
    assert out.frames.shape[1] >= 1 + codes.shape[1] + ASR_DELAY
    assert isinstance(out.text, str)
    assert transcribe(speech.lm, codec, tokenizer, audio, speech.layout) == out.text  # greedy


@pytest.mark.parametrize("mode", ["continuation", "interleave", "aligned"])
def test_continue_keeps_the_prompt_and_adds_seconds(files, model, mode):
    speech, codec, tokenizer = model
    c = speech.lm.config
    audio = load_audio(files["wav"])
    codes = encode_audio(codec, audio)[:c.n_q]  # [n_q, T]
    layout = replace(speech.layout, mode=mode)
    out = continue_speech(speech.lm, codec, audio, 1.2, layout=layout, tokenizer=tokenizer, seed=1)
    new = round(1.2 * 12.5)
    assert len(out.audio) == (codes.shape[1] + new) * HOP
    if mode == "continuation":
        got = from_continuation(out.frames, c)
        assert (out.frames[0] == c.text_start_id).all()
    elif mode == "aligned":  # the ASR direction: text written by the model, lagging the audio
        got = from_aligned(out.frames, c, ASR_DELAY).codes
        assert isinstance(out.text, str)
    else:
        got = from_continuation(out.frames, c)  # one speech span starts where continuation does
        assert (out.frames[0, 1:] == TEXT_PAD_ID).all()
    assert got.shape[1] >= codes.shape[1] + new
    np.testing.assert_array_equal(got[:, :codes.shape[1]], codes)  # the prompt, then more
    prompt = decode_codes(codec, codes)
    np.testing.assert_allclose(out.audio[:len(prompt)], prompt, atol=1e-4)


@pytest.mark.parametrize("mode", ["continuation", "aligned"])
def test_convert_keeps_codebook_one_and_samples_the_acoustics(files, model, mode):
    from voxlm.convert import convert_voice

    speech, codec, tokenizer = model
    c = speech.lm.config
    audio = load_audio(files["wav"])
    source, target = audio[:HOP * 8], audio[HOP * 8:HOP * 14] * 0.5  # 8 and 6 codec frames
    layout = replace(speech.layout, mode=mode)
    out = convert_voice(speech.lm, codec, source, target, layout=layout, prompt_seconds=0.4, seed=3)
    assert len(out.audio) == 8 * HOP and np.isfinite(out.audio).all()
    got = from_continuation(out.frames, c) if mode == "continuation" else \
        from_aligned(out.frames, c, ASR_DELAY).codes  # [n_q, 5 + 8 (+ delay columns)]
    prompt = encode_audio(codec, target)[:c.n_q, :5]
    content = encode_audio(codec, source)[:c.n_q]
    np.testing.assert_array_equal(got[:, :5], prompt)  # the voice prompt, given whole
    np.testing.assert_array_equal(got[0, 5:13], content[0])  # what is said: the source's cb1
    assert (got[1:, 5:13] != content[1:]).any()  # acoustics: sampled, not copied
    again = convert_voice(speech.lm, codec, source, target, layout=layout, prompt_seconds=0.4,
                          seed=3)
    np.testing.assert_array_equal(again.frames, out.frames)
    kept = convert_voice(speech.lm, codec, source, target, layout=layout, prompt_seconds=0.4,
                         seed=3, keep=2)  # the source's codebooks 1 and 2, the rest sampled
    got = from_continuation(kept.frames, c) if mode == "continuation" else \
        from_aligned(kept.frames, c, ASR_DELAY).codes
    np.testing.assert_array_equal(got[:2, 5:13], content[:2])
    assert (got[2:, 5:13] != content[2:]).any()
    with pytest.raises(VoxlmError, match="keep 1 to 2"):
        convert_voice(speech.lm, codec, source, target, layout=layout, keep=c.n_q)
    with pytest.raises(VoxlmError, match="context"):
        convert_voice(speech.lm, codec, audio, target, layout=layout, prompt_seconds=0.4)
    with pytest.raises(VoxlmError, match="one voice"):
        convert_voice(speech.lm, codec, source, target, layout=replace(layout, mode="duplex"))


def test_same_seed_same_output(files, model):
    speech, codec, tokenizer = model
    runs = [synthesize(speech.lm, codec, tokenizer, TEXT, layout=speech.layout, seed=seed)
            for seed in (3, 3, 4)]
    assert np.array_equal(runs[0].frames, runs[1].frames)
    assert np.array_equal(runs[0].audio, runs[1].audio)
    assert not np.array_equal(runs[0].frames, runs[2].frames)
    audio = load_audio(files["wav"])
    a, b = (continue_speech(speech.lm, codec, audio, 0.8, layout=speech.layout, seed=5).audio
            for _ in range(2))
    assert np.array_equal(a, b)


def test_voice_and_mode_errors(files, model):
    speech, codec, tokenizer = model
    check_voice(None)
    check_voice("default")
    with pytest.raises(VoxlmError, match="no voice conditioning"):
        synthesize(speech.lm, codec, tokenizer, TEXT, voice="alice", layout=speech.layout)
    with pytest.raises(VoxlmError, match="continuation mode"):
        synthesize(speech.lm, codec, tokenizer, TEXT, layout=SpeechLayout(mode="continuation"))
    with pytest.raises(VoxlmError, match="no words"):
        synthesize(speech.lm, codec, tokenizer, "  ", layout=speech.layout)
    with pytest.raises(VoxlmError, match="codec does not fit"):
        continue_speech(speech.lm, Codec(replace(codec_config("tiny"), codebook_size=32)),
                        load_audio(files["wav"]), 1.0)


# ---------------------------------------------------------------- the commands

def _voxlm(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "voxlm", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_cli_tts_asr_continue_end_to_end(files):
    root, run = files["root"], files["run"]
    spoken = root / "tts.wav"
    result = _voxlm("tts", TEXT, "-o", spoken, "--checkpoint", run, "--seed", "2",
                    "--temperature", "0.9", "--top-k", "20", "--top-p", "0.95",
                    "--text-temperature", "0.3", "--text-top-k", "5")
    assert result.returncode == 0, result.stderr
    assert spoken.exists() and "wrote" in result.stdout
    assert len(load_audio(spoken)) >= sum(1 + len(w) for w in tokenize_words(
        [{"w": w} for w in TEXT.split()], load_speech_lm(run).tokenizer())) * HOP
    result = _voxlm("asr", spoken, "--checkpoint", run / "model.safetensors",
                    "--codec", files["codec"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and "Traceback" not in result.stderr
    more = root / "more.wav"
    result = _voxlm("continue", spoken, "-o", more, "--seconds", "1", "--checkpoint", run)
    assert result.returncode == 0, result.stderr
    frames = -(-len(load_audio(spoken)) // HOP)
    assert len(load_audio(more)) == (frames + round(12.5)) * HOP


def test_cli_convert_writes_the_source_length(files, tmp_path):
    audio = load_audio(files["wav"])
    save_audio(tmp_path / "source.wav", audio[:HOP * 7])
    save_audio(tmp_path / "voice.wav", audio[HOP * 7:])
    out = tmp_path / "converted.wav"
    result = _voxlm("convert", tmp_path / "source.wav", "--voice", tmp_path / "voice.wav", "-o", out,
                    "--prompt-seconds", "0.3", "--checkpoint", files["run"], "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "in the voice of" in result.stdout and len(load_audio(out)) == 7 * HOP


def test_cli_errors_are_one_line(files, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav file at all")
    cases = [("asr", bad, "--checkpoint", files["run"]),
             ("tts", "hi", "-o", tmp_path / "x.wav", "--checkpoint", tmp_path / "missing"),
             ("tts", "hi", "-o", tmp_path / "x.wav", "--voice", "alice",
              "--checkpoint", files["run"]),
             ("continue", files["wav"], "-o", tmp_path / "y.mp3", "--checkpoint", files["run"])]
    for args in cases:  # in this process: the same code path as `python -m voxlm`, faster
        assert main([str(a) for a in args]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("voxlm: error:"), lines
    assert not (tmp_path / "x.wav").exists()


def test_shipped_lm_speaks_and_a_missing_or_damaged_one_is_named(files, tmp_path, monkeypatch,
                                                                  capsys):
    """voxlm/assets/lm.safetensors: checksum verified, the aligned layout, the dialogue model's
    text vocabulary (a dialogue model can start from it), the shipped codec; it speaks, and
    transcribes the same way twice (greedy); all shipped weights fit 40 MB; without it the CLI says how to get one."""
    import voxlm.lm.speech
    from voxlm.dialogue import default_dialogue_path

    shipped = load_speech_lm()
    assert shipped.path == default_lm_path() and shipped.layout.mode == "aligned"
    tokenizer = shipped.tokenizer()
    assert tokenizer.model_proto == default_dialogue_path().with_suffix(
        ".tokenizer.model").read_bytes()
    codec = shipped.codec()
    spoken = synthesize(shipped.lm, codec, tokenizer, "yes", seed=0, layout=shipped.layout,
                        options=TTSOptions(tail=0.5))
    assert 0 < len(spoken.audio) < 16000 * 6 and np.isfinite(spoken.audio).all()
    assert np.abs(spoken.audio).max() > 1e-3  # sound, not silence
    heard = transcribe(shipped.lm, codec, tokenizer, spoken.audio, shipped.layout)
    assert transcribe(shipped.lm, codec, tokenizer, spoken.audio, shipped.layout) == heard  # greedy
    assets = default_lm_path().parent
    assert sum(p.stat().st_size for p in assets.glob("*.safetensors")) <= 40e6
    damaged = tmp_path / "lm.safetensors"
    data = bytearray(default_lm_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside the weights
    damaged.write_bytes(bytes(data))
    with pytest.raises(VoxlmError, match="checksum"):
        load_speech_lm(damaged)
    monkeypatch.setattr(voxlm.lm.speech, "default_lm_path", lambda: tmp_path / "none.safetensors")
    assert main(["continue", str(files["wav"]), "-o", str(tmp_path / "y.wav")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("voxlm: error:") and "voxlm lm train" in error
    assert "--checkpoint" in error and not (tmp_path / "y.wav").exists()


# ---------------------------------------------------------------- bad input (docs/RELIABILITY.md)

RUN = ("--checkpoint", "{run}")
LM_CLI_ERRORS = {  # id: (arguments, words in the one-line error)
    "tts-empty": (("tts", "", "-o", "{out}/x.wav", *RUN), ["no words to speak", "letters or numbers"]),
    "tts-punctuation-only": (("tts", "?! ...", "-o", "{out}/x.wav", *RUN),
                             ["no words to speak in '?! ...'"]),
    "tts-unknown-voice": (("tts", "hi", "-o", "{out}/x.wav", "--voice", "alice", *RUN),
                          ["no voice conditioning", "leave --voice out"]),
    "tts-output-mp3": (("tts", "hi", "-o", "{out}/x.mp3", *RUN), ["cannot write '.mp3'", "use a .wav"]),
    "tts-checkpoint-missing": (("tts", "hi", "-o", "{out}/x.wav", "--checkpoint", "{out}/nothing"),
                               ["model file not found", "check the path"]),
    "tts-codec-as-lm": (("tts", "hi", "-o", "{out}/x.wav", "--checkpoint", "{codec}"),
                        ["holds a 'codec' model, not a 'lm' one"]),
    "tts-temperature-negative": (("tts", "hi", "-o", "{out}/x.wav", "--temperature", "-1", *RUN),
                                 ["--temperature -1.0", "pass 0 (greedy) or more"]),
    "tts-top-p-above-one": (("tts", "hi", "-o", "{out}/x.wav", "--top-p", "2", *RUN),
                            ["--top-p 2.0", "probability in 0..1"]),
    "tts-text-temperature-negative": (("tts", "hi", "-o", "{out}/x.wav", "--text-temperature", "-1",
                                       *RUN), ["--text-temperature -1.0", "pass 0 (greedy) or more"]),
    "tts-pad-temperature-negative": (("tts", "hi", "-o", "{out}/x.wav", "--pad-temperature", "-1",
                                      *RUN), ["--pad-temperature -1.0", "pass 0 (off"]),
    "tts-top-k-negative": (("tts", "hi", "-o", "{out}/x.wav", "--top-k", "-3", *RUN),
                           ["--top-k -3", "0 (all) or more"]),
    "asr-not-audio": (("asr", "{out}/text.wav", *RUN), ["not a readable audio file", "pass one of"]),
    "asr-codec-missing": (("asr", "{wav}", *RUN, "--codec", "{out}/nothing.safetensors"),
                          ["model file not found"]),
    "continue-seconds-huge": (("continue", "{wav}", "-o", "{out}/y.wav", "--seconds", "1e9", *RUN),
                              ["--seconds 1000000000.0", "from 0 to 600 seconds"]),
    "continue-seconds-nan": (("continue", "{wav}", "-o", "{out}/y.wav", "--seconds", "nan", *RUN),
                             ["--seconds nan"]),
    "convert-prompt-zero": (("convert", "{wav}", "--voice", "{wav}", "-o", "{out}/c.wav",
                             "--prompt-seconds", "0", *RUN), ["--prompt-seconds 0.0", "above 0"]),
    "convert-source-too-long": (("convert", "{wav}", "--voice", "{wav}", "-o", "{out}/c.wav",
                                 "--prompt-seconds", "0.4", *RUN),
                                ["model's context", "shorter pieces"]),
    "convert-keep-all": (("convert", "{wav}", "--voice", "{wav}", "-o", "{out}/c.wav",
                          "--keep-codebooks", "0", *RUN), ["--keep-codebooks 0", "keep 1 to"]),
    "convert-voice-missing": (("convert", "{wav}", "--voice", "{out}/nobody.wav", "-o",
                               "{out}/c.wav", *RUN), ["nobody.wav"]),
    "lm-train-dropout-one": (("lm", "train", "--data", "{out}", "--out", "{out}/r", "--dropout", "1"),
                             ["--dropout 1.0", "a probability from 0 up to 1"]),
    "lm-train-init-and-warm-start": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                      "--init", "{out}", "--warm-start", "gguf"),
                                     ["--init and --warm-start", "pass one of them"]),
    "lm-tokenize-two-tokenizers": (("lm", "tokenize", "--data", "{out}", "--out", "{out}/tk",
                                    "--trim", "--text-vocab", "300"), ["pass at most one"]),
    "lm-train-lr-negative": (("lm", "train", "--data", "{out}", "--out", "{out}/r", "--lr", "-1"),
                             ["--lr -1.0", "such as 3e-4"]),
    "lm-train-grad-clip-zero": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                 "--grad-clip", "0"), ["--grad-clip 0.0", "above 0"]),
    "lm-train-semantic-weight-zero": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                       "--semantic-weight", "0"),
                                      ["--semantic-weight 0.0", "above 0"]),
    "lm-train-shape-only-alone": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                   "--shape-only"), ["--shape-only takes the shape",
                                                     "add --warm-start gguf"]),
    "lm-train-no-tokens": (("lm", "train", "--data", "{out}/nothing", "--out", "{out}/r"),
                           ["no such tokens folder", "voxlm lm tokenize"]),
    "lm-train-no-valid-split": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                 "--valid-every", "50"),
                                ["have no items in split valid", "held-out voices",
                                 "drop --valid-every"]),
    "lm-train-valid-every-negative": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                       "--valid-every", "-1"),
                                      ["--valid-every -1", "0 for no validation"]),
    "lm-train-listen-weight-negative": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                         "--listen-weight", "-1"),
                                        ["--listen-weight -1.0", "0 (no listen head) or more"]),
    "lm-train-init-other-codec-alone": (("lm", "train", "--data", "{out}", "--out", "{out}/r",
                                         "--init-other-codec"),
                                        ["--init-other-codec says", "add --init RUN"]),
    "lm-train-listen-not-duplex": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                    "--listen-weight", "1", "--config", "tiny"),
                                   ["--mode aligned has no user", "train --mode duplex"]),
    "lm-train-user-codebooks-not-duplex": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                            "--user-codebooks", "1", "--config", "tiny"),
                                           ["--user-codebooks 1 with --mode aligned",
                                            "use --mode duplex"]),
    "lm-train-user-codebooks-too-many": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                          "--mode", "duplex", "--user-codebooks", "5", "--config",
                                          "tiny"),
                                         ["--user-codebooks 5, and the model reads 3 codebooks",
                                          "pass 1 to 3"]),
    "lm-train-listen-delay-negative": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                        "--mode", "duplex", "--listen-weight", "1",
                                        "--listen-delay", "-1", "--config", "tiny"),
                                       ["--listen-delay -1", "0 frames or more"]),
    "lm-train-text-continuation": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r",
                                    "--mode", "continuation", "--text", "{out}/text.wav",
                                    "--config", "tiny"),
                                   ["--text mixes text into a model's text stream",
                                    "--mode aligned or duplex"]),
    "lm-train-text-missing": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r", "--text",
                               "{out}/answers.txt", "--config", "tiny"),
                              ["answers.txt: no such text file", "one utterance per line", "voxlm synth answers"]),
    "lm-train-text-share-one": (("lm", "train", "--data", "{tokens}", "--out", "{out}/r", "--text",
                                 "{out}/text.wav", "--text-share", "1", "--config", "tiny"),
                                ["--text-share 1.0", "from 0 up to 1"]),
    "synth-answers-max-operand": (("synth", "answers", "--out", "{out}/a.txt", "--max-operand",
                                   "100"), ["--max-operand 100", "pass 0 to 99"]),
    "lm-export-keep-int8-without-int4": (("lm", "export", "{run}", "{out}/x.safetensors",
                                          "--keep-int8", "audio_emb"),
                                         ["--keep-int8 chooses what --int4", "add --int4"]),
    "lm-export-keep-int8-unknown": (("lm", "export", "{run}", "{out}/x.safetensors", "--int4",
                                     "--keep-int8", "audio_embz"),
                                    ["--keep-int8 audio_embz: no weight", "audio_emb, audio_heads"]),
    "eval-lm-limit-zero": (("eval", "lm", "--report", "{out}/rep", "--limit", "0", *RUN),
                           ["--limit 0", "use 1 or more"]),
}


@pytest.mark.parametrize("case", sorted(LM_CLI_ERRORS))
def test_lm_cli_bad_input(case, files, tmp_path, capsys):
    args, words = LM_CLI_ERRORS[case]
    (tmp_path / "text.wav").write_text("I am not audio.\n" * 20)
    where = {"run": files["run"], "codec": files["codec"], "wav": files["wav"], "out": tmp_path,
             "tokens": files["tokens"]}
    assert main([a.format(**where) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxlm: error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "y.wav").exists()


def test_every_lm_case_is_a_row_of_the_table():
    table = (Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md").read_text()
    missing = [case for case in LM_CLI_ERRORS if f"`{case}`" not in table]
    assert not missing, f"docs/RELIABILITY.md lacks rows for {missing}"
