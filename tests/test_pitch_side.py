"""The pitch side channel: its tracker streams like offline and agrees with the codec's pitch
targets, its grid's error is bounded, and the decoder speaks at the pitch it is sent."""
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxlm.codec.files import n_q_for, roundtrip_audio, total_kbps
from voxlm.codec.model import Codec, codec_config
from voxlm.codec.pitch_side import (SLOTS, PitchEncoder, dequantize_f0, pitch_codes, pitch_f0,
                                    pitch_kbps, quantize_f0)
from voxlm.errors import VoxlmError
from voxlm.pitch import pitch_track

SR, HOP = 16000, 1280


def gliding_voice(seconds=2.0, seed=0):
    """A buzz gliding 110 -> 220 Hz with a pause in the middle and a little noise."""
    t = np.arange(int(SR * seconds)) / SR
    hz = 110 * 2 ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(hz) / SR
    buzz = sum(np.sin(k * phase) / k for k in range(1, 12))
    gate = ((t < 0.8) | (t > 1.1)).astype(float)
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.003
    return (0.2 * buzz * gate + noise).astype(np.float32), hz * gate


def test_grid_error_is_at_most_half_a_step():
    hz = np.geomspace(50, 500, 2000)
    back = dequantize_f0(quantize_f0(hz)).numpy()
    cents = np.abs(1200 * np.log2(back / hz))
    assert cents.max() < 16.0 and cents.max() > 10.0  # half of the 31.6-cent step
    assert quantize_f0(np.array([0.0, 30.0, 900.0])).tolist() == [0, 1, 127]
    assert dequantize_f0(np.array([0]))[0] == 0.0
    assert math.isclose(pitch_kbps(12.5), 0.35)


def test_tracker_streams_in_any_chunks_like_offline_and_follows_the_glide():
    audio, hz = gliding_voice()
    offline = pitch_codes(audio, HOP)
    frames = -(-len(audio) // HOP)
    assert offline.shape == (SLOTS, frames) and offline.dtype == np.int16
    for size in (7, 333, 1280, 5000):
        encoder = PitchEncoder(HOP)
        parts = [encoder.step(audio[i: i + size]) for i in range(0, len(audio), size)]
        # a frame's pitch comes once 56 ms of the next frame are in: never before its end
        done = 0
        for i, part in zip(range(0, len(audio), size), parts):
            done += part.shape[1]
            assert done == 0 or done * HOP + 56 * 16 <= i + size
        streamed = np.concatenate(parts + [encoder.flush()], axis=1)
        assert np.array_equal(streamed, offline), size
    f0 = pitch_f0(torch.from_numpy(offline)[None], HOP // 160)[0].numpy()  # [T100]
    # against the codec's own pitch targets (offline YIN, as in training: decoder frame t is
    # the tracker's frame t + 1), within a grid step where both call it voiced
    yin = pitch_track(audio)[0][1: len(f0) + 1]
    both = (yin > 0) & (f0[: len(yin)] > 0)
    assert both.mean() > 0.75
    cents = np.abs(1200 * np.log2(f0[: len(yin)][both] / yin[both]))
    assert np.median(cents) < 10 and np.mean(cents < 30) > 0.95  # 2 frames late: 13 cents
    # the pause is unvoiced, and so is silence
    truth = hz[::160][1: len(f0) + 1]
    assert (f0[: len(truth)][truth == 0] == 0).mean() > 0.9
    assert not pitch_codes(np.zeros(SR, np.float32), HOP).any()


def test_decoder_speaks_at_the_pitch_it_is_sent():
    torch.manual_seed(0)
    codec = Codec(codec_config("tiny")).eval()
    with torch.no_grad():  # an envelope falling with frequency and no noise: harmonics alone
        head = codec.decoder.vocoder.head
        head.weight.zero_()
        head.bias.zero_()
        head.bias[2: 2 + 321] = -0.5 - torch.linspace(0, 2, 321)
        head.bias[2 + 321:] = -20.0
    codes = torch.zeros(1, 4, 20, dtype=torch.long)
    for hz in (90.0, 120.0, 210.0, 300.0):
        pitch = torch.from_numpy(quantize_f0(np.full((1, SLOTS, 20), hz)).astype(np.int64))
        audio = codec.decode(codes, pitch)[0, 0].numpy()
        heard = pitch_track(audio)[0][20:-20]
        assert np.median(heard) == pytest.approx(hz, rel=0.011)  # the grid: 0.9% at most
    silent = codec.decode(codes, torch.zeros(1, SLOTS, 20, dtype=torch.long))[0, 0]
    assert silent.abs().max() < 1e-3  # unvoiced slots: no harmonics


def test_roundtrip_with_pitch_streams_like_offline_and_costs_its_bitrate():
    torch.manual_seed(0)
    codec = Codec(replace(codec_config("tiny"), transformer_layers=1)).eval()
    audio, _ = gliding_voice(1.5)
    offline = roundtrip_audio(codec, audio, 2, pitch=True)
    streamed = roundtrip_audio(codec, audio, 2, streaming=True, pitch=True)
    assert offline.shape == streamed.shape == audio.shape
    # the F0 comes from the pitch codes, not from the two paths' float32 features: no drift
    assert np.abs(offline - streamed).max() < 1e-4
    assert np.abs(offline - roundtrip_audio(codec, audio, 2)).max() > 1e-3  # it is used
    # the bitrate is the codes' and the pitch's
    assert n_q_for(codec, 1.0, pitch=True) == codec.config.n_q_for_kbps(1.0 - 0.35)
    assert total_kbps(codec, 2, pitch=True) == pytest.approx(codec.config.kbps(2) + 0.35)
    with pytest.raises(VoxlmError, match="lowest with pitch"):
        n_q_for(codec, codec.config.kbps(1), pitch=True)
    with pytest.raises(VoxlmError, match="takes no pitch"):
        n_q_for(Codec(replace(codec_config("tiny"), vocoder="istft")), 1.0, pitch=True)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "voxlm", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_codes_with_pitch_and_bad_files(tmp_path):
    from voxlm.audio import load_audio, save_audio
    from voxlm.codec.train import export_codec

    model = export_codec(Codec(codec_config("tiny")), tmp_path / "codec.safetensors")
    wav = save_audio(tmp_path / "in.wav", gliding_voice(1.0)[0])
    result = run_cli("codec", "encode", wav, tmp_path / "codes.npz", "--pitch", "--checkpoint", model)
    assert result.returncode == 0 and "with the input's pitch" in result.stdout, result.stderr
    with np.load(tmp_path / "codes.npz") as archive:
        assert archive["codes"].shape == (4, 13) and archive["pitch"].shape == (SLOTS, 13)
        assert archive["pitch"].any()
        codes, pitch = archive["codes"], archive["pitch"]
    result = run_cli("codec", "decode", tmp_path / "codes.npz", tmp_path / "back.wav", "--checkpoint", model)
    assert result.returncode == 0, result.stderr
    assert len(load_audio(tmp_path / "back.wav")) == 13 * HOP
    result = run_cli("codec", "roundtrip", wav, tmp_path / "out.wav", "--pitch", "--streaming",
                     "--bitrate", "0.5", "--checkpoint", model)
    assert result.returncode == 0 and "0.5 kbps with the input's pitch" in result.stdout, result.stdout
    np.savez(tmp_path / "nopitch.npz", codes=codes)
    np.savez(tmp_path / "badpitch.npz", codes=codes, pitch=pitch[:, :5])
    bad_cases = [
        (("encode", wav, tmp_path / "x.npy", "--pitch"), "written as .npz"),
        (("decode", tmp_path / "nopitch.npz", tmp_path / "x.wav"), "without `codes` and `pitch`"),
        (("decode", tmp_path / "badpitch.npz", tmp_path / "x.wav"), "is not 4 codes of 0..127"),
        (("roundtrip", wav, tmp_path / "x.wav", "--pitch", "--bitrate", "0.3"), "lowest with pitch"),
    ]
    for args, message in bad_cases:
        result = run_cli("codec", *args, "--checkpoint", model)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
