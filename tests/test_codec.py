"""Codec: streaming equals offline, bitrate arithmetic, training, exact resume, DDP, bad input."""
import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxlm.codec.files import n_q_for
from voxlm.codec.model import Codec, codec_config, load_codec
from voxlm.codec.train import CodecTask, CodecTrainConfig, export_codec
from voxlm.codec.vocoder import LEVEL_SCALE, HarmonicNoiseVocoder
from voxlm.errors import VoxlmError
from voxlm.eval.codec_suite import codec_systems
from voxlm.modules.conv import CausalConv1d, CausalISTFT, CausalSTFT
from voxlm.modules.transformer import Transformer
from voxlm.train import TrainConfig, Trainer, setup_distributed


def chunked(module, x, sizes, batch):
    outs = []
    with module.streaming(batch):
        for part in torch.split(x, sizes, dim=-1):
            outs.append(module(part))
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("make,shape,sizes", [
    (lambda: CausalConv1d(3, 5, 7), (2, 3, 40), [1, 3, 5, 1, 10, 2, 8, 10]),
    (lambda: CausalConv1d(3, 5, 4, stride=2), (2, 3, 40), [2, 4, 6, 2, 10, 16]),
    (lambda: CausalConv1d(4, 4, 7, groups=4, dilation=2), (2, 4, 40), [7, 1, 32]),
    (lambda: CausalConv1d(4, 6, 8, stride=8), (1, 4, 64), [8, 16, 8, 32]),
    (lambda: CausalSTFT(64, 16), (2, 1, 160), [16, 32, 16, 48, 48]),
])
def test_streaming_layers_equal_offline(make, shape, sizes):
    torch.manual_seed(0)
    module, x = make(), torch.randn(*shape)
    assert torch.allclose(module(x), chunked(module, x, sizes, shape[0]), atol=1e-5)


def test_istft_and_transformer_stream():
    torch.manual_seed(0)
    istft = CausalISTFT(64, 16)
    spec = torch.randn(2, 33, 10, dtype=torch.complex64)
    assert torch.allclose(istft(spec), chunked(istft, spec, [1, 2, 3, 4], 2), atol=1e-6)
    transformer = Transformer(32, 2, 4, context=5)
    x = torch.randn(2, 17, 32)
    outs = []
    with transformer.streaming(2):
        for part in torch.split(x, [1, 4, 2, 7, 3], dim=1):
            outs.append(transformer(part))
    assert torch.allclose(transformer(x), torch.cat(outs, 1), atol=1e-5)
    # a window of 5 in 2 layers: the output at 16 sees inputs 8..16 only
    y = x.clone()
    y[:, :8] += 1
    assert torch.allclose(transformer(x)[:, 16], transformer(y)[:, 16], atol=1e-5)


def _stream_codec(codec, audio):
    hop = codec.config.hop
    codes = codec.encode(audio)
    decoded = codec.decode(codes)
    with codec.streaming(1):
        frames = [codec.encode(f) for f in torch.split(audio, hop, dim=-1)]
        streamed = [codec.decode(c) for c in frames]
    assert torch.equal(torch.cat(frames, -1), codes)
    assert decoded.shape == audio.shape
    return (torch.cat(streamed, -1) - decoded).abs().max().item()


def test_codec_streams_frame_by_frame_like_offline():
    torch.manual_seed(0)
    config = replace(codec_config("tiny"), transformer_layers=1)
    audio = torch.randn(1, 1, config.hop * 9) * 0.1
    # free-phase iSTFT decoder: float32 streaming equals offline
    assert _stream_codec(Codec(replace(config, vocoder="istft")).eval(), audio) < 1e-4
    # harmonic decoder: its phase integrates F0, so float32 rounding of F0 (~5e-7 between the
    # two paths' convolutions) drifts the phase slowly; the streaming logic itself is checked
    # in float64, where the paths agree far below the bar
    codec = Codec(config).eval().double()
    assert _stream_codec(codec, audio.double()) < 1e-6
    # semantic layers: codebook 1 reads its own latent, offline and frame by frame alike
    semantic = Codec(replace(config, semantic_layers=2, vocoder="istft")).eval()
    assert semantic.encoder(audio).shape == (1, 2 * config.latent_dim, 9)
    assert _stream_codec(semantic, audio) < 1e-4
    # narrower semantic layers (their own width, in and out projections) stream alike
    narrow = Codec(replace(config, semantic_layers=1, semantic_dim=16, semantic_ff_mult=2,
                           vocoder="istft")).eval()
    assert narrow.encoder.semantic_in.weight.shape == (16, config.channels[-1], 1)
    assert narrow.encoder(audio).shape == (1, 2 * config.latent_dim, 9)
    assert _stream_codec(narrow, audio) < 1e-4


def test_harmonic_vocoder_streams_in_any_chunks():
    torch.manual_seed(0)
    vocoder = HarmonicNoiseVocoder(16, 64, 16, 16000).eval()
    with torch.no_grad():
        features = torch.randn(2, 23, 16)
        offline = vocoder(features)[0]
        with vocoder.streaming(2):
            streamed = torch.cat([vocoder(part)[0] for part in torch.split(features, [1, 5, 2, 8, 7], 1)], 1)
    assert offline.shape == (2, 23 * 16)
    assert (offline - streamed).abs().max() < 1e-6 * offline.abs().max()


def test_harmonic_vocoder_output_is_periodic_at_its_f0():
    vocoder = HarmonicNoiseVocoder(8, 640, 160, 16000).eval()
    with torch.no_grad():
        vocoder.head.weight.zero_()
        vocoder.head.bias.zero_()
        vocoder.head.bias[1] = 10.0  # voiced
        vocoder.head.bias[2: 2 + 321] = -2.0 / LEVEL_SCALE  # flat envelope
        vocoder.head.bias[2 + 321:] = -20.0  # no noise
        audio = vocoder(torch.zeros(1, 100, 8))[0][0, 4000:].numpy()  # 0.75 s of steady tone
    f0 = math.exp((math.log(500.0) + math.log(50.0)) / 2)  # head output 0: the middle of the range
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = spectrum.argmax() * 16000 / len(audio)
    assert abs(peak_hz % f0) < 3 or abs(peak_hz % f0 - f0) < 3  # energy sits on harmonics of F0
    assert 0.01 < np.sqrt(np.mean(audio ** 2)) < 1.0


def test_bitrate_arithmetic():
    base = codec_config("base")
    assert base.hop == 1280 and base.frame_rate == 12.5
    assert base.kbps() == pytest.approx(1.5)  # 12 codebooks x 10 bits x 12.5 Hz
    assert base.kbps(8) == pytest.approx(1.0)
    assert base.n_q_for_kbps(1.0) == 8 and base.n_q_for_kbps(1.49) == 11
    assert base.n_q_for_kbps(99) == 12 and base.n_q_for_kbps(0.01) == 1
    codec = Codec(codec_config("tiny")).eval()
    audio = torch.randn(1, 1, codec.config.hop * 3)
    for n_q in range(1, codec.config.n_q + 1):
        assert codec.encode(audio, n_q).shape == (1, n_q, 3)


def small_task(corpus, **overrides):
    settings = dict(batch_size=4, segment_frames=8, adversarial_start=3, disc_frames=4)
    settings.update(overrides)
    return CodecTask(corpus, codec_config("tiny"), CodecTrainConfig(**settings), progress=False)


def held_out_mel(task, codec) -> float:
    """The mel loss on a fixed batch (not one the run trains on), synthesised with target F0."""
    audio, _, f0 = task.data.batch(seed=12345, step=0, size=8, frames=8)
    was_training = codec.training
    codec.eval()
    with torch.no_grad():
        loss = task.mel_loss(codec(audio, None, f0).audio[:, 0], audio[:, 0])
    codec.train(was_training)
    return float(loss)


def test_tiny_codec_learns(tiny_corpus, tmp_path):
    config = TrainConfig(steps=40, warmup=2, save_every=100, log_every=1, seed=1)
    trainer = Trainer(small_task(tiny_corpus, adversarial_start=1000), config, tmp_path, progress=False)
    before = held_out_mel(trainer.task, trainer.task.codec)
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(np.isfinite(r["mel"]) for r in rows)
    after = held_out_mel(trainer.task, trainer.task.codec)
    assert after < 0.8 * before, (before, after)
    codec = load_codec(tmp_path)  # the exported inference file loads and runs
    assert codec.encode(torch.zeros(1, 1, codec.config.hop)).shape == (1, 4, 1)


def test_resume_after_kill_reproduces_the_run(tiny_corpus, tmp_path):
    config = TrainConfig(steps=6, warmup=2, save_every=3, log_every=1, seed=3)
    whole = Trainer(small_task(tiny_corpus), config, tmp_path / "whole", progress=False)
    whole.run()
    killed = Trainer(small_task(tiny_corpus), config, tmp_path / "killed", progress=False)
    killed.run(stop_at=5)  # checkpoint at step 3; steps 4 and 5 are lost with the process
    resumed = Trainer(small_task(tiny_corpus), config, tmp_path / "killed", progress=False)
    resumed.run()
    assert resumed.step == 6
    a, b = whole.task.codec.state_dict(), resumed.task.codec.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    d1, d2 = whole.task.discriminators.state_dict(), resumed.task.discriminators.state_dict()
    assert all(torch.equal(d1[k], d2[k]) for k in d1)


def test_stop_at_ends_a_run_saved_on_its_schedule_and_it_goes_on(tiny_corpus, tmp_path):
    from voxlm.checkpoint import load_torch
    from voxlm.errors import VoxlmError
    from voxlm.train import lr_factor

    config = TrainConfig(steps=6, warmup=2, save_every=5, log_every=1, seed=3)
    whole = Trainer(small_task(tiny_corpus), config, tmp_path / "whole", progress=False)
    whole.run()
    stopped = replace(config, stop_at=4)
    early = Trainer(small_task(tiny_corpus), stopped, tmp_path / "early", progress=False)
    assert early.run() == 4
    assert load_torch(tmp_path / "early" / "train_state.pt")["step"] == 4  # saved off save_every
    rows = [json.loads(line) for line in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["lr"] == pytest.approx(lr_factor(3, config))  # the 6-step schedule's rate
    codec = load_codec(tmp_path / "early")  # the model file is written at the stop
    assert codec.encode(torch.zeros(1, 1, codec.config.hop)).shape[-1] == 1
    going_on = Trainer(small_task(tiny_corpus), config, tmp_path / "early", progress=False)
    assert going_on.run() == 6
    a, b = whole.task.codec.state_dict(), going_on.task.codec.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "a stopped run, resumed, left the schedule"
    with pytest.raises(VoxlmError, match="--stop-at 9"):
        Trainer(small_task(tiny_corpus), TrainConfig(steps=6, stop_at=9), tmp_path / "bad", progress=False)


def test_pitch_shift_moves_f0_and_its_targets_together(tiny_corpus):
    from voxlm.codec.train import CodecData
    from voxlm.pitch import pitch_track

    data = CodecData(tiny_corpus, codec_config("tiny"), progress=False)
    plain = data.batch(seed=4, step=0, size=6, frames=16)
    assert all(torch.equal(a, b) for a, b in zip(plain, data.batch(4, 0, 6, 16, pitch_shift=0.0)))
    audio, _, f0 = data.batch(4, 0, 6, 16, pitch_shift=7.0, pitch_shift_share=1.0)
    checked, ratios = 0, []
    for row in range(6):
        heard, _ = pitch_track(audio[row, 0].numpy())
        target = f0[row, : len(heard)].numpy()
        both = (heard > 0) & (target > 0)
        if both.sum() >= 20:
            checked += 1  # the targets follow the shifted audio's own pitch
            assert abs(np.median(heard[both] / target[both]) - 1) < 0.05
        if f0[row, 0] > 0 and plain[2][row, 0] > 0:  # the same first frame, F0 times the ratio
            ratios.append(float(f0[row, 0] / plain[2][row, 0]))
    assert checked >= 3 and ratios
    assert all(2 ** (-7.01 / 12) < r < 2 ** (7.01 / 12) and abs(r - 1) > 1e-3 for r in ratios)


def test_decoder_only_run_keeps_every_code(tiny_corpus, tmp_path):
    config = TrainConfig(steps=4, warmup=1, save_every=100, log_every=1, seed=1)
    Trainer(small_task(tiny_corpus, adversarial_start=1000), config, tmp_path / "first",
            progress=False).run()
    base = load_codec(tmp_path / "first")
    task = small_task(tiny_corpus, init=str(tmp_path / "first"), decoder_only=True,
                      adversarial_start=2, lr=3e-3)  # GAN steps with frozen codes too
    Trainer(task, config, tmp_path / "second", progress=False).run()
    tuned = load_codec(tmp_path / "second")
    audio, _, _ = task.data.batch(seed=5, step=0, size=2, frames=8)
    assert torch.equal(base.encode(audio), tuned.encode(audio))
    first_sha = hashlib.sha256((tmp_path / "first" / "model.safetensors").read_bytes()).hexdigest()
    assert tuned.codes_of == (first_sha,)  # LMs trained on the first one's tokens accept it
    before, after = base.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    decoding_side = ("decoder.", "quantizer.semantic_out.", "quantizer.acoustic_out.")
    assert any(k.startswith("decoder.") for k in changed), "the decoder did not learn"
    assert all(k.startswith(decoding_side) for k in changed), sorted(changed)
    # a plain --init run restarts the EMA statistics from the file's codebooks
    full = small_task(tiny_corpus, init=str(tmp_path / "first"))
    full.setup(setup_distributed(), config)
    codebook = full.codec.quantizer.acoustic.codebooks[0]
    assert torch.equal(codebook.embed_sum, codebook.embed) and bool((codebook.usage == 1).all())
    with pytest.raises(VoxlmError, match="--decoder-only needs"):
        small_task(tiny_corpus, decoder_only=True).setup(setup_distributed(), config)
    other = CodecTask(tiny_corpus, replace(codec_config("tiny"), n_q=3),
                      CodecTrainConfig(init=str(tmp_path / "first")), progress=False)
    with pytest.raises(VoxlmError, match="another config"):
        other.setup(setup_distributed(), config)
    with pytest.raises(VoxlmError, match="without --decoder-only"):  # resuming with other flags
        Trainer(small_task(tiny_corpus, init=str(tmp_path / "first"), decoder_only=True), config,
                tmp_path / "first", progress=False).run()


def test_semantic_only_run_learns_codebook_one_and_keeps_the_acoustic_codes(tiny_corpus, tmp_path):
    """--semantic-layers N --semantic-only from a plain codec: the new layers learn the
    distillation loss, codebook 1 gets new codes, codebooks 2.. keep theirs, and a
    --decoder-only run from it keeps every one of its codes."""
    config = TrainConfig(steps=3, warmup=1, save_every=100, log_every=1, seed=1)
    Trainer(small_task(tiny_corpus, adversarial_start=1000), config, tmp_path / "first",
            progress=False).run()
    base = load_codec(tmp_path / "first")
    model = replace(codec_config("tiny"), semantic_layers=1, semantic_dim=16, semantic_ff_mult=2)
    settings = dict(batch_size=4, segment_frames=8, adversarial_start=1000, lr=3e-3)
    task = CodecTask(tiny_corpus, model, CodecTrainConfig(**settings, init=str(tmp_path / "first"),
                                                          semantic_only=True), progress=False)
    long = TrainConfig(steps=60, warmup=1, save_every=100, log_every=1, seed=1)
    Trainer(task, long, tmp_path / "semantic", progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "semantic" / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"distill", "commit", "perplexity_1"} and "mel" not in rows[0]
    assert np.mean([r["distill"] for r in rows[-10:]]) < 0.95 * np.mean([r["distill"] for r in rows[:10]])
    semantic = load_codec(tmp_path / "semantic")
    assert semantic.config.semantic_layers == 1 and semantic.config.semantic_dim == 16
    assert semantic.encoder.semantic_in.weight.shape == (16, model.channels[-1], 1)
    audio, _, _ = task.data.batch(seed=5, step=0, size=2, frames=8)
    old, new = base.encode(audio), semantic.encode(audio)
    assert torch.equal(old[:, 1:], new[:, 1:]) and not torch.equal(old[:, :1], new[:, :1])
    before, after = base.state_dict(), semantic.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("quantizer.semantic", "distill.")) for k in changed), changed
    decoder = CodecTask(tiny_corpus, model, CodecTrainConfig(**settings, init=str(tmp_path / "semantic"),
                                                             decoder_only=True), progress=False)
    Trainer(decoder, config, tmp_path / "decoder", progress=False).run()
    assert torch.equal(load_codec(tmp_path / "decoder").encode(audio), new)
    for flags, words in ((dict(semantic_only=True), "pass --init CODEC and --semantic-layers"),
                         (dict(semantic_only=True, decoder_only=True, init=str(tmp_path / "first")),
                          "opposite sides")):
        bad = CodecTask(tiny_corpus, model, CodecTrainConfig(**flags), progress=False)
        with pytest.raises(VoxlmError, match=words):
            bad.setup(setup_distributed(), config)
    fewer = CodecTask(tiny_corpus, codec_config("tiny"), CodecTrainConfig(init=str(tmp_path / "semantic")),
                      progress=False)
    with pytest.raises(VoxlmError, match="another config"):  # it would drop the semantic layers
        fewer.setup(setup_distributed(), config)
    wider = CodecTask(tiny_corpus, replace(model, semantic_dim=0),
                      CodecTrainConfig(init=str(tmp_path / "semantic")), progress=False)
    with pytest.raises(VoxlmError, match="--semantic-layers 1 --semantic-dim 16"):
        wider.setup(setup_distributed(), config)


def test_voice_decoder_reads_codebook_one_alone(tiny_corpus, tmp_path):
    """--decoder-codebooks 1: the codes stay those of the codec it starts from, and what it
    decodes depends on codebook 1 only, so a language model's acoustic codebooks cannot sway it."""
    config = TrainConfig(steps=3, warmup=1, save_every=100, log_every=1, seed=1)
    Trainer(small_task(tiny_corpus, adversarial_start=1000), config, tmp_path / "first",
            progress=False).run()
    base = load_codec(tmp_path / "first")
    voice = CodecTask(tiny_corpus, replace(codec_config("tiny"), decoder_codebooks=1),
                      CodecTrainConfig(batch_size=4, segment_frames=8, adversarial_start=1000,
                                       init=str(tmp_path / "first"), decoder_only=True, lr=3e-3),
                      progress=False)
    assert voice.n_q_for_step(0) == voice.n_q_for_step(1) == 1
    Trainer(voice, config, tmp_path / "voice", progress=False).run()
    tuned = load_codec(tmp_path / "voice")
    assert tuned.config.decoder_codebooks == 1 and len(tuned.codes_of) == 1
    # its bitrate is that of the codebooks it reads: one row in `eval codec`, whatever is asked
    assert tuned.config.n_q_for_kbps(99.0) == n_q_for(tuned, None) == 1
    assert list(codec_systems(tuned, (0.125, tuned.config.kbps()))) == [f"voxlm {tuned.config.kbps(1):g}k"]
    audio, _, _ = voice.data.batch(seed=5, step=0, size=2, frames=8)
    codes = base.encode(audio)  # [2, n_q, 8]
    assert torch.equal(codes, tuned.encode(audio))
    noise = codes.clone()
    noise[:, 1:] = torch.randint(0, base.config.codebook_size, noise[:, 1:].shape)
    spoken = tuned.decode(codes)
    assert torch.equal(spoken, tuned.decode(noise)) and torch.equal(spoken, tuned.decode(codes[:, :1]))
    assert not torch.allclose(base.decode(codes), base.decode(noise))  # the base codec reads them
    streamed = []
    for given in (codes, noise):  # the streaming path reads codebook 1 alone as well
        with tuned.streaming(2):
            streamed.append(torch.cat([tuned.decode(given[..., t: t + 1]) for t in range(8)], -1))
    assert torch.equal(*streamed) and (streamed[0] - spoken).abs().max() < 1e-3
    # exported alone (`codec export --voice`), it comes back on the encoder of the codec it
    # decodes the codes of, in a smaller file; no other codec's encoder will do
    full, alone = export_codec(tuned, tmp_path / "full.safetensors"), export_codec(
        tuned, tmp_path / "voice.safetensors", voice=True)
    assert alone.stat().st_size < 0.7 * full.stat().st_size
    back = load_codec(alone, base=tmp_path / "first" / "model.safetensors")
    assert back.config == tuned.config and torch.equal(back.encode(audio), codes)
    assert torch.equal(back.decode(noise), spoken)
    assert torch.equal(load_codec(alone, base=full).decode(noise), spoken)  # the same codes
    stranger = export_codec(Codec(codec_config("tiny")), tmp_path / "stranger.safetensors")
    with pytest.raises(VoxlmError, match="codes of another codec"):
        load_codec(alone, base=stranger)
    with pytest.raises(VoxlmError, match="--voice exports a voice decoder"):
        export_codec(base, tmp_path / "no.safetensors", voice=True)
    for flags, words in ((dict(), "add --decoder-only --init CODEC"),
                         (dict(decoder_only=True, init=str(tmp_path / "first")), "pass 1 to")):
        k = 1 if not flags else codec_config("tiny").n_q
        bad = CodecTask(tiny_corpus, replace(codec_config("tiny"), decoder_codebooks=k),
                        CodecTrainConfig(**flags), progress=False)
        with pytest.raises(VoxlmError, match=words):
            bad.setup(setup_distributed(), config)


def test_two_process_ddp_step_equals_one_process(tiny_corpus, tmp_path):
    # one step with every loss (GAN included); a second step could flip a near-tied code
    # assignment from float summation order alone
    args = ["codec", "train", "--data", str(tiny_corpus), "--config", "tiny", "--steps", "1",
            "--batch-size", "4", "--segment-frames", "8", "--adversarial-start", "0",
            "--save-every", "1", "--quiet", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "voxlm", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "voxlm", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = torch.load(tmp_path / "one" / "train_state.pt", weights_only=False)["modules"]
    two = torch.load(tmp_path / "two" / "train_state.pt", weights_only=False)["modules"]
    # Adam's first step moves every weight by about the learning rate (5e-4 for the
    # discriminators) whatever the gradient's size, so float summation order shows up as ~1e-5
    for part in ("codec", "discriminators"):
        for name, tensor in one[part].items():
            assert torch.allclose(tensor.float(), two[part][name].float(), atol=5e-5), \
                (part, name, (tensor.float() - two[part][name].float()).abs().max())


def test_checkpoint_and_code_file_errors(tmp_path):
    codec = Codec(codec_config("tiny"))
    path = export_codec(codec, tmp_path / "codec.safetensors")
    assert load_codec(path).config == codec.config
    with pytest.raises(VoxlmError, match="not found"):
        load_codec(tmp_path / "missing.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(VoxlmError, match="truncated or corrupt"):
        load_codec(tmp_path / "cut.safetensors")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(VoxlmError, match="checksum"):
        load_codec(tmp_path / "flip.safetensors")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "voxlm", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_roundtrip_and_bad_input(tmp_path, engines):
    codec = Codec(codec_config("tiny"))
    model = export_codec(codec, tmp_path / "codec.safetensors")
    from voxlm.audio import save_audio
    speech = engines("espeak").speak("Testing the codec round trip.").audio
    wav = save_audio(tmp_path / "in.wav", speech)
    result = run_cli("codec", "roundtrip", wav, tmp_path / "out.wav", "--checkpoint", model,
                     "--streaming", "--bitrate", "0.2")
    assert result.returncode == 0, result.stderr
    assert "0.15 kbps" in result.stdout and "frame by frame" in result.stdout
    result = run_cli("codec", "encode", wav, tmp_path / "codes.npy", "--checkpoint", model)
    assert result.returncode == 0 and np.load(tmp_path / "codes.npy").shape[0] == 4
    assert run_cli("codec", "decode", tmp_path / "codes.npy", tmp_path / "back.wav",
                   "--checkpoint", model).returncode == 0
    np.save(tmp_path / "bad.npy", np.full((4, 5), 999, np.int16))
    bad_cases = [
        ("decode", tmp_path / "bad.npy", tmp_path / "x.wav", "do not fit this codec"),
        ("decode", wav, tmp_path / "x.wav", "not a .npy code file"),
        ("roundtrip", wav, tmp_path / "x.wav", "below this codec's lowest"),
        ("encode", tmp_path / "nothing.wav", tmp_path / "x.npy", "no such file"),
    ]
    for command, src, dst, message in bad_cases:
        extra = ["--bitrate", "0.01"] if command == "roundtrip" else []
        result = run_cli("codec", command, src, dst, "--checkpoint", model, *extra)
        assert result.returncode == 2, (command, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    result = run_cli("codec", "train", "--data", tmp_path, "--out", tmp_path / "run")
    assert result.returncode == 2 and "no manifest.jsonl" in result.stderr



def test_shipped_codec_loads_and_streams():
    from voxlm.codec.model import default_codec_path

    if not default_codec_path().exists():
        pytest.skip("no codec ships in voxlm/assets yet")
    codec = load_codec()
    assert codec.config.frame_rate == 12.5 and codec.config.kbps() <= 1.5
    t = torch.arange(codec.config.hop * 10) / 16000
    audio = (0.1 * torch.sin(2 * math.pi * 150 * t) * (1 + torch.sin(2 * math.pi * 3 * t)))[None, None]
    codes = codec.encode(audio)
    with codec.streaming(1):
        frames = [codec.encode(f) for f in torch.split(audio, codec.config.hop, dim=-1)]
        streamed = torch.cat([codec.decode(c) for c in frames], -1)
    assert torch.equal(torch.cat(frames, -1), codes)
    decoded = codec.decode(codes)
    assert streamed.shape == decoded.shape == audio.shape
    assert torch.isfinite(decoded).all() and decoded.abs().max() < 1.0


def test_shipped_voice_decoder_speaks_codebook_one_on_the_shipped_encoder():
    """voxlm/assets/voice.safetensors: the decoding side alone (a few MB), loaded on the shipped
    codec's encoder: the same codes, and speech that depends on codebook 1 alone."""
    from voxlm.codec.model import default_codec_path, default_voice_path

    assert default_voice_path().stat().st_size < 0.5 * default_codec_path().stat().st_size
    codec, voice = load_codec(), load_codec(default_voice_path())
    assert voice.config.decoder_codebooks == 1
    t = torch.arange(codec.config.hop * 10) / 16000
    audio = (0.1 * torch.sin(2 * math.pi * 150 * t) * (1 + torch.sin(2 * math.pi * 3 * t)))[None, None]
    codes = codec.encode(audio)
    assert torch.equal(voice.encode(audio), codes)
    other = codes.clone()
    other[:, 1:] = (other[:, 1:] + 1) % codec.config.codebook_size
    spoken = voice.decode(codes)
    assert torch.equal(spoken, voice.decode(other)) and not torch.equal(spoken, codec.decode(codes))
    assert torch.isfinite(spoken).all() and spoken.abs().max() < 1.0
