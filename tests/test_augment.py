"""voxlm.synth.augment: each effect does what it says, measured on the output."""
from __future__ import annotations

import numpy as np
import pytest

from voxlm.audio import SAMPLE_RATE
from voxlm.errors import VoxlmError
from voxlm.synth import augment as A
from voxlm.synth.engines import Word


@pytest.fixture(scope="module")
def speech():
    from voxlm.synth.engines import get_engine

    return get_engine("espeak").speak("The quick brown fox jumps over the lazy dog, twice.")


def tone(seconds: float = 1.0, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # [T]


def peak_freq(audio: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / len(audio)


def band_energy(audio: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / SAMPLE_RATE)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def check_output(audio: np.ndarray):
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


# ---------------------------------------------------------------------------- single effects

def test_identity_returns_a_copy_without_sox(speech, monkeypatch):
    monkeypatch.setattr(A, "sox", None)  # must not be called
    out, words = A.apply(speech.audio, speech.words, A.Augment(), seed=0)
    assert np.array_equal(out, speech.audio) and out is not speech.audio
    assert words == speech.words and A.Augment().describe() == "clean"


@pytest.mark.parametrize("speed", [1.2, 0.8])
def test_speed_changes_length_pitch_and_timings(speech, speed):
    out, words = A.apply(speech.audio, speech.words, A.Augment(speed=speed), seed=0)
    check_output(out)
    assert abs(len(out) - len(speech.audio) / speed) <= 1
    for before, after in zip(speech.words, words):
        assert isinstance(after, Word) and after.w == before.w
        assert after.start == pytest.approx(before.start / speed, abs=1e-3)
        assert after.end == pytest.approx(before.end / speed, abs=1e-3)
    assert words[-1].end <= len(out) / SAMPLE_RATE
    fast, _ = A.apply(tone(), [], A.Augment(speed=speed))
    assert peak_freq(fast) == pytest.approx(440.0 * speed, rel=0.005)  # like a faster tape


def test_speed_scales_dict_words():
    words = [{"w": "hi", "start": 0.12, "end": 0.6}]
    _, out = A.apply(tone(), words, A.Augment(speed=1.2))
    assert out == [{"w": "hi", "start": 0.1, "end": 0.5}]


@pytest.mark.parametrize("cents", [300, -300])
def test_pitch_keeps_length_and_timings(speech, cents):
    out, words = A.apply(speech.audio, speech.words, A.Augment(pitch_cents=cents))
    check_output(out)
    assert len(out) == len(speech.audio) and words == speech.words
    shifted, _ = A.apply(tone(), [], A.Augment(pitch_cents=cents))
    assert len(shifted) == SAMPLE_RATE
    assert peak_freq(shifted[2000:-2000]) == pytest.approx(440.0 * 2 ** (cents / 1200), rel=0.01)


def bursts() -> tuple:
    """Tone bursts with silent gaps: (audio [2 s], mask of the samples that are 'speech')."""
    audio = np.zeros(2 * SAMPLE_RATE, np.float32)
    mask = np.zeros(len(audio), bool)
    for k in range(4):
        s = k * SAMPLE_RATE // 2
        audio[s: s + 3200] = tone(0.2, 300 + 100 * k, 0.2)
        mask[s: s + 3200] = True
    return audio, mask


@pytest.mark.parametrize("colour", A.NOISE_COLOURS)
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_hits_requested_snr(colour, snr):
    clean, mask = bursts()
    out, _ = A.apply(clean, [], A.Augment(snr_db=snr, noise=colour), seed=3)
    check_output(out)
    noise = out.astype(np.float64) - clean
    speech_power = np.mean(clean[mask].astype(np.float64) ** 2)  # over the speech, not the gaps
    measured = 10 * np.log10(speech_power / np.mean(noise ** 2))
    assert measured == pytest.approx(snr, abs=0.5)


def test_noise_snr_on_real_speech(speech):
    out, words = A.apply(speech.audio, speech.words, A.Augment(snr_db=15.0, noise="pink"), seed=1)
    noise = out.astype(np.float64) - speech.audio
    measured = 10 * np.log10(A.speech_power(speech.audio) / np.mean(noise ** 2))
    assert measured == pytest.approx(15.0, abs=0.5) and words == speech.words


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    low_over_high = {}  # energy in 100-200 Hz over 1600-3200 Hz: white 1/16, pink 1, brown 16
    for colour in A.NOISE_COLOURS:
        noise = A.coloured_noise(4 * SAMPLE_RATE, colour, rng)
        assert np.mean(noise ** 2) == pytest.approx(1.0)
        low_over_high[colour] = band_energy(noise, 100, 200) / band_energy(noise, 1600, 3200)
    assert low_over_high["white"] == pytest.approx(1 / 16, rel=0.3)
    assert low_over_high["pink"] == pytest.approx(1.0, rel=0.3)
    assert low_over_high["brown"] == pytest.approx(16.0, rel=0.3)


def test_noise_is_seeded():
    clean, _ = bursts()
    aug = A.Augment(snr_db=10.0)
    a, _ = A.apply(clean, [], aug, seed=7)
    b, _ = A.apply(clean, [], aug, seed=7)
    c, _ = A.apply(clean, [], aug, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_telephone_band(speech):
    rng = np.random.default_rng(0)
    noisy = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)  # energy at every frequency
    for audio, timings in ((noisy, []), (speech.audio, speech.words)):
        out, words = A.apply(audio, timings, A.Augment(telephone=True))
        check_output(out)
        assert len(out) == len(audio) and words == timings
        total = band_energy(out, 0, SAMPLE_RATE / 2)
        assert band_energy(out, 3500, SAMPLE_RATE / 2) < 1e-3 * total  # below -30 dB
        assert band_energy(out, 0, 200) < 1e-2 * total
        assert band_energy(out, 500, 3000) > 0.5 * total  # the speech band stays
    assert band_energy(noisy, 3500, SAMPLE_RATE / 2) > 0.5 * band_energy(noisy, 0, SAMPLE_RATE / 2)


def test_reverb_keeps_timings_and_adds_at_most_the_tail(speech):
    out, words = A.apply(speech.audio, speech.words, A.Augment(reverb=80.0))
    check_output(out)
    n = len(speech.audio)
    assert n <= len(out) <= n + int(A.REVERB_TAIL * SAMPLE_RATE) and words == speech.words
    dry, _ = A.apply(tone(0.3), [], A.Augment())
    wet, _ = A.apply(np.concatenate([tone(0.3), np.zeros(8000, np.float32)]), [],
                     A.Augment(reverb=80.0))
    ring = wet[len(dry) + 800: len(dry) + 4000]  # 50-250 ms after the tone stopped
    assert np.sqrt(np.mean(ring ** 2)) > 1e-3  # the room still rings


def test_everything_at_once_stays_in_range(speech):
    loud = speech.audio / np.abs(speech.audio).max()  # peak exactly 1
    aug = A.Augment(speed=0.9, pitch_cents=-200, snr_db=0.0, noise="brown", reverb=100.0,
                    telephone=True)
    out, words = A.apply(loud, speech.words, aug, seed=2)
    check_output(out)
    assert len(loud) / 0.9 - 1 <= len(out) <= len(loud) / 0.9 + A.REVERB_TAIL * SAMPLE_RATE
    assert words[-1].end == pytest.approx(speech.words[-1].end / 0.9, abs=1e-3)
    assert aug.describe() == "speed0.90+pitch-200+reverb100+snr0brown+phone"


# ---------------------------------------------------------------------------- sampling, errors

def test_random_augment_mix():
    rng = np.random.default_rng(0)
    assert all(A.random_augment(rng, 0.0).identity for _ in range(50))
    mix = [A.random_augment(rng, 0.5) for _ in range(300)]
    clean = sum(a.identity for a in mix) / len(mix)
    assert 0.25 < clean < 0.6  # most items are light or untouched
    assert all(0.92 <= a.speed <= 1.08 and abs(a.pitch_cents) <= 150 for a in mix)
    assert any(a.snr_db is not None for a in mix) and any(a.telephone for a in mix)
    strong = [A.random_augment(rng, 1.0) for _ in range(300)]
    assert sum(a.identity for a in strong) < sum(a.identity for a in mix)
    assert all(a.snr_db is None or 10 <= a.snr_db <= 40 for a in strong)


@pytest.mark.parametrize("kwargs", [{"speed": 3.0}, {"pitch_cents": 5000}, {"reverb": 101},
                                    {"noise": "purple", "snr_db": 10}, {"snr_db": 500}])
def test_bad_settings_say_the_range(kwargs):
    with pytest.raises(VoxlmError, match="use"):
        A.Augment(**kwargs)


def test_missing_sox_says_how_to_install(monkeypatch):
    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    with pytest.raises(VoxlmError, match=r"sox.*scripts/install-system\.sh"):
        A.apply(tone(), [], A.Augment(speed=1.1))
