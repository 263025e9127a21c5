"""voxlm.audio: every format and rate we promise to read, atomic writes, loudness, and one clear
VoxlmError (file name + problem + fix) for each kind of bad input."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxlm.audio import SAMPLE_RATE, load_audio, normalize_loudness, resample, save_audio
from voxlm.errors import VoxlmError

FREQ = 440.0  # Hz, test tone
AMP = 0.5  # test tone amplitude


def tone(rate: int, seconds: float = 1.0, freq: float = FREQ, amp: float = AMP) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # [T]


def peak_freq(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Frequency of the strongest spectral peak, refined by parabolic interpolation."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(audio)


def level(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def check_tone(audio: np.ndarray, seconds: float = 1.0, slack: float = 1, amp: float = AMP,
               rel: float = 0.03):
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - seconds * SAMPLE_RATE) <= slack, len(audio)
    assert abs(peak_freq(audio) - FREQ) < 0.5
    mid = audio[len(audio) // 10: -len(audio) // 10]  # skip resampler / codec edges
    assert level(mid) == pytest.approx(amp / np.sqrt(2), rel=rel)


# ---------------------------------------------------------------------------- formats and rates

@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_wav_rates_resample_to_16k(tmp_path, rate):
    path = tmp_path / f"tone{rate}.wav"
    sf.write(path, tone(rate), rate, subtype="PCM_16")
    check_tone(load_audio(path))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "FLOAT"])
def test_wav_bit_depths(tmp_path, subtype):
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(path, tone(44100), 44100, subtype=subtype)
    assert sf.info(path).subtype == subtype
    audio = load_audio(path)
    check_tone(audio)
    exact = tone(SAMPLE_RATE)
    tolerance = {"PCM_U8": 0.03, "PCM_16": 3e-3, "PCM_24": 3e-3, "FLOAT": 3e-3}[subtype]
    assert np.abs(audio[800:-800] - exact[800:-800]).max() < tolerance  # waveform, not only pitch


def test_stereo_mixes_down_to_mono(tmp_path):
    left, right = tone(48000, amp=0.6), tone(48000, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000)  # [T, 2]
    check_tone(load_audio(path), amp=0.4)  # mean of the channels
    both = load_audio(path, mono=False)  # [T, 2]
    assert both.shape == (SAMPLE_RATE, 2)
    assert level(both[:, 0]) / level(both[:, 1]) == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("fmt,subtype,suffix,slack", [
    ("FLAC", "PCM_16", ".flac", 1),
    ("OGG", "VORBIS", ".ogg", 1),
    ("MP3", "MPEG_LAYER_III", ".mp3", 0.1 * SAMPLE_RATE),  # mp3 frames pad the ends
])
def test_compressed_formats(tmp_path, fmt, subtype, suffix, slack):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, tone(44100), 44100, format=fmt, subtype=subtype)
    check_tone(load_audio(path), slack=slack, rel=0.1 if fmt != "FLAC" else 0.03)


def test_mp3_from_ffmpeg(tmp_path):
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    src, dst = tmp_path / "src.wav", tmp_path / "ff.mp3"
    sf.write(src, tone(22050, seconds=2.0), 22050)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-b:a", "64k", str(dst)], check=True)
    check_tone(load_audio(dst), seconds=2.0, slack=0.1 * SAMPLE_RATE, rel=0.1)  # lossy


def test_load_at_other_rate(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(16000), 16000)
    audio = load_audio(path, sample_rate=8000)
    assert len(audio) == 8000
    assert abs(peak_freq(audio, 8000) - FREQ) < 0.5


def test_resample_round_trip_keeps_waveform():
    x = tone(SAMPLE_RATE)
    up = resample(x, SAMPLE_RATE, 48000)
    assert len(up) == 48000 and up.dtype == np.float32
    back = resample(up, 48000, SAMPLE_RATE)
    assert np.abs(back[400:-400] - x[400:-400]).max() < 1e-3
    assert resample(x, SAMPLE_RATE, SAMPLE_RATE) is x  # no work when the rate already matches


# ---------------------------------------------------------------------------- saving

@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_save_round_trip(tmp_path, suffix):
    x = tone(SAMPLE_RATE)
    path = save_audio(tmp_path / "sub" / f"out{suffix}", x)
    assert path.is_file()
    assert np.abs(load_audio(path) - x).max() < 1e-4  # 16-bit quantisation only
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what open() gives under this umask (mkstemp alone gives 0600)
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_save_clips_to_full_scale(tmp_path):
    path = save_audio(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], np.float32))
    assert np.abs(load_audio(path, max_seconds=1)).max() <= 1.0


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(VoxlmError, match=r"out\.mp3.*\.wav or \.flac"):
        save_audio(tmp_path / "out.mp3", tone(SAMPLE_RATE))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_save_bad_samples_leaves_existing_file(tmp_path, bad):
    path = save_audio(tmp_path / "keep.wav", tone(SAMPLE_RATE))
    before = path.read_bytes()
    x = tone(SAMPLE_RATE)
    x[100] = bad
    with pytest.raises(VoxlmError, match=r"keep\.wav.*NaN/inf.*fix"):
        save_audio(path, x)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_save_failure_mid_write_leaves_existing_file(tmp_path, monkeypatch):
    path = save_audio(tmp_path / "keep.wav", tone(SAMPLE_RATE))
    before = path.read_bytes()

    def broken_write(f, *args, **kwargs):
        f.write(b"RIFF half a file")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, tone(SAMPLE_RATE, amp=0.1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


# ---------------------------------------------------------------------------- loudness

def bursts(amp: float) -> np.ndarray:
    """200 ms tone bursts with 300 ms pauses, aligned to 20 ms blocks: [2 s * 16 kHz]."""
    on = tone(SAMPLE_RATE, seconds=0.2, amp=amp)
    off = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    return np.concatenate([on, off] * 4)


@pytest.mark.parametrize("target", [-30.0, -23.0, -16.0])
def test_normalize_loudness_hits_target(target):
    x = bursts(0.01)
    y = normalize_loudness(x, target_db=target)
    active = y[np.abs(x) > 0]  # samples inside the bursts: pauses must not pull the level down
    on = np.concatenate([y[k * 8000: k * 8000 + 3200] for k in range(4)])
    assert 20 * np.log10(level(on)) == pytest.approx(target, abs=0.1)
    assert np.abs(active).max() <= 0.95 and y.dtype == np.float32


def test_normalize_loudness_never_clips():
    x = np.zeros(SAMPLE_RATE, np.float32)
    x[::1000] = 0.5  # clicks: a very high peak-to-RMS ratio
    y = normalize_loudness(x, target_db=-6.0)
    assert np.abs(y).max() == pytest.approx(0.95, abs=1e-6)


def test_normalize_loudness_silence_unchanged():
    assert not np.any(normalize_loudness(np.zeros(SAMPLE_RATE, np.float32)))
    assert len(normalize_loudness(np.zeros(10, np.float32))) == 10


# ---------------------------------------------------------------------------- bad input

def _wav_bytes(seconds: float = 1.0, subtype: str = "PCM_16") -> bytes:
    path = Path(tempfile.mkdtemp()) / "ok.wav"
    sf.write(path, tone(SAMPLE_RATE, seconds), SAMPLE_RATE, subtype=subtype)
    data = path.read_bytes()
    path.unlink()
    path.parent.rmdir()
    return data


def _float_wav_with(value: float):
    def make(path: Path):
        x = tone(SAMPLE_RATE)
        x[123] = value
        sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")  # float wav stores NaN/inf as they are
    return make


BAD_INPUTS = {  # name: (make the file at path, words in the problem, words in the fix)
    "missing": (lambda p: None, "no such file", "check the path"),
    "directory": (lambda p: p.mkdir(), "directory", "pass a wav"),
    "empty": (lambda p: p.write_bytes(b""), "empty", "pass a wav"),
    "truncated_half": (lambda p: p.write_bytes(_wav_bytes()[: len(_wav_bytes()) // 2]),
                       "truncated", "re-export"),
    "header_only": (lambda p: p.write_bytes(_wav_bytes()[:44]), "truncated", "re-export"),
    "text_as_wav": (lambda p: p.write_text("hello, I am not audio\n" * 20), "not a readable audio",
                    "pass one of"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)),
                     "not a readable audio", "pass one of"),
    "nan_samples": (_float_wav_with(np.nan), "NaN/inf", "re-export"),
    "inf_samples": (_float_wav_with(np.inf), "NaN/inf", "re-export"),
    "zero_frames": (lambda p: sf.write(p, np.zeros(0, np.float32), SAMPLE_RATE), "zero length",
                    "at least one sample"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_problem_and_fix(tmp_path, case):
    make, problem, fix = BAD_INPUTS[case]
    path = tmp_path / f"bad_{case}.wav"
    make(path)
    with pytest.raises(VoxlmError) as info:
        load_audio(path)
    message = str(info.value)
    assert path.name in message
    assert problem in message and fix in message, message
    assert "\n" not in message


def test_too_long_names_file_and_limit(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(SAMPLE_RATE, seconds=3.0), SAMPLE_RATE)
    with pytest.raises(VoxlmError) as info:
        load_audio(path, max_seconds=2.0)
    message = str(info.value)
    assert "long.wav" in message and "3 s long" in message and "2 s limit" in message
    assert "cut it into shorter files" in message
    assert len(load_audio(path, max_seconds=4.0)) == 3 * SAMPLE_RATE


# ---------------------------------------------------------------------------- fuzzing

def test_random_bytes_give_audio_or_voxlm_error():
    """Whatever bytes are in a file, load_audio returns float32 audio or raises VoxlmError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid = _wav_bytes(0.05)
    mutated = st.tuples(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                                 max_size=8),
                        st.integers(0, len(valid))).map(
        lambda m: bytes(_mutate(valid, m[0]))[: m[1]])  # a real wav with bytes flipped, cut short
    tried, outcomes = [], {"audio": 0, "error": 0}

    with tempfile.TemporaryDirectory() as tmp:
        @settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.one_of(st.binary(min_size=1, max_size=2048), mutated),
               suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
        def check(data, suffix):
            path = Path(tmp) / f"fuzz{suffix}"
            path.write_bytes(data)
            tried.append(len(data))
            try:
                audio = load_audio(path, max_seconds=60)
            except VoxlmError as exc:
                assert path.name in str(exc)
                outcomes["error"] += 1
                return
            assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
            outcomes["audio"] += 1

        check()
    print(f"load_audio fuzz: {len(tried)} inputs tried, {outcomes}")
    assert len(tried) >= 100


def _mutate(data: bytes, edits) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        out[pos] = value
    return out


def test_module_does_not_leave_temp_files(tmp_path):
    save_audio(tmp_path / "a.wav", tone(SAMPLE_RATE))
    save_audio(tmp_path / "a.wav", tone(SAMPLE_RATE, amp=0.1))  # overwrite in place
    assert os.listdir(tmp_path) == ["a.wav"]
