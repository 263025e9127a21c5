"""Augmentations for one 16 kHz utterance and its word timings: speed, pitch, noise, reverb and
a telephone band, so a model trained on clean TTS voices meets something closer to real rooms,
microphones and phone lines.

    aug = random_augment(np.random.default_rng(0), strength=0.5)
    audio, words = apply(speech.audio, speech.words, aug, seed=0)

Speed, pitch, reverb and the band filter run in sox (one subprocess, raw float32 through pipes);
noise is made with numpy from a seeded generator, so `apply` is deterministic for a given seed.
Order: speed -> pitch -> reverb -> noise -> telephone (noise enters the room, then the line).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE, check_audio, resample
from ..errors import VoxlmError
from .engines import Word

NOISE_COLOURS = ("white", "pink", "brown")  # power spectrum flat, 1/f, 1/f^2
HEADROOM = 4.0  # sox clips at full scale inside its chain: 12 dB down going in, back up coming out
REVERB_TAIL = 0.5  # seconds: the most reverb tail kept after the last sample of the input
TAIL_FLOOR_DB = -60.0  # tail samples quieter than this (relative to the peak) are trimmed off
PHONE_RATE = 8_000  # Hz, narrowband telephone (G.711)
PHONE_BAND = "300-3400"  # Hz, the classic telephone pass band
MU = 255.0  # G.711 mu-law companding constant
GATE_DB = 40.0  # speech level: 20 ms blocks within 40 dB of the loudest (as normalize_loudness)


@dataclass(frozen=True)
class Augment:
    """One augmentation recipe. The default changes nothing."""

    speed: float = 1.0  # sox `speed` factor: 1.2 = 20% faster and higher; words scale by 1/speed
    pitch_cents: float = 0.0  # sox `pitch` shift in cents (100 = one semitone), duration kept
    snr_db: float | None = None  # noise level in dB below the speech; None = no noise
    noise: str = "white"  # noise colour, one of NOISE_COLOURS
    reverb: float = 0.0  # sox `reverb` reverberance 0..100; 0 = dry. Adds up to REVERB_TAIL s
    telephone: bool = False  # 300-3400 Hz band, 8 kHz mu-law round trip

    def __post_init__(self):
        if not 0.5 <= self.speed <= 2.0:
            raise VoxlmError(f"augment speed {self.speed} is out of range; use 0.5 to 2.0")
        if abs(self.pitch_cents) > 1200:
            raise VoxlmError(f"augment pitch {self.pitch_cents} cents is out of range; "
                             "use -1200 to 1200 (one octave)")
        if self.snr_db is not None and not -10 <= self.snr_db <= 100:
            raise VoxlmError(f"augment snr {self.snr_db} dB is out of range; "
                             "use -10 to 100, or None for no noise")
        if self.noise not in NOISE_COLOURS:
            raise VoxlmError(f"unknown noise colour '{self.noise}'; use one of "
                             f"{', '.join(NOISE_COLOURS)}")
        if not 0 <= self.reverb <= 100:
            raise VoxlmError(f"augment reverb {self.reverb} is out of range; use 0 to 100")

    @property
    def identity(self) -> bool:
        return (self.speed == 1.0 and self.pitch_cents == 0 and self.snr_db is None
                and self.reverb == 0 and not self.telephone)

    def describe(self) -> str:
        """Short tag for manifests and logs, e.g. 'speed1.10+snr20pink'; 'clean' when identity."""
        parts = [f"speed{self.speed:.2f}" if self.speed != 1.0 else "",
                 f"pitch{self.pitch_cents:+.0f}" if self.pitch_cents else "",
                 f"reverb{self.reverb:.0f}" if self.reverb else "",
                 f"snr{self.snr_db:.0f}{self.noise}" if self.snr_db is not None else "",
                 "phone" if self.telephone else ""]
        return "+".join(p for p in parts if p) or "clean"


def random_augment(rng: np.random.Generator, strength: float = 0.5) -> Augment:
    """Sample a sensible mix: each effect is on with a probability that grows with `strength`
    (0 = always clean, 1 = strong), and its size grows with it too. At strength 0.5 about 35% of
    utterances come out clean and most of the rest get one or two light effects."""
    if not 0 <= strength <= 1:
        raise VoxlmError(f"augment strength {strength} is out of range; use 0 to 1")
    s = float(strength)
    on = lambda p: rng.random() < p * s  # noqa: E731
    speed = round(float(1.0 + rng.uniform(-0.15, 0.15) * s), 3) if on(0.5) else 1.0
    pitch = round(float(rng.uniform(-300, 300) * s)) if on(0.4) else 0.0
    reverb = round(float(rng.uniform(10, 10 + 70 * s)), 1) if on(0.3) else 0.0
    snr = round(float(rng.uniform(40 - 30 * s, 40)), 1) if on(0.5) else None
    noise = str(rng.choice(NOISE_COLOURS, p=[0.4, 0.4, 0.2]))
    return Augment(speed=speed, pitch_cents=pitch, snr_db=snr,
                   noise=noise if snr is not None else "white", reverb=reverb,
                   telephone=bool(on(0.15)))


def apply(audio: np.ndarray, words: list, augment: Augment, seed: int = 0):
    """Augment audio [T] float32 at 16 kHz; return (audio [T'] float32, words).

    Words (Word tuples or {"w","start","end"} dicts, seconds) scale by 1/speed and are clipped to
    the new length; every other effect keeps the timings. Output is finite with peak <= 1.
    """
    audio = check_audio(np.reshape(audio, -1), "augment input")  # [T], finite, not empty
    if augment.identity:
        return audio.copy(), list(words)
    length = int(round(len(audio) / augment.speed))  # samples after the speed change
    effects = _effects(augment)
    if effects:
        audio = sox(audio, effects)  # [T' + tail]
    audio = _fit_length(audio, length, REVERB_TAIL if augment.reverb else 0.0)
    if augment.snr_db is not None:
        audio = add_noise(audio, augment.snr_db, augment.noise, np.random.default_rng(seed))
    if augment.telephone:
        audio = telephone(audio)
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak  # scale rather than clip: keeps the SNR and the spectrum
    words = scale_words(words, 1.0 / augment.speed, len(audio) / SAMPLE_RATE)
    return audio.astype(np.float32), words


def _effects(augment: Augment) -> list:
    """The sox effect chain for speed, pitch and reverb (empty when none is on)."""
    effects = []
    if augment.speed != 1.0:
        effects += ["speed", f"{augment.speed:.6g}"]
    if augment.pitch_cents:
        effects += ["pitch", f"{augment.pitch_cents:.6g}"]
    if augment.reverb:
        # reverb cuts its tail at the input's end, so give it room to ring first
        effects += ["pad", "0", f"{REVERB_TAIL}", "reverb", f"{augment.reverb:.6g}"]
    if augment.speed != 1.0:
        effects += ["rate", "-v", str(SAMPLE_RATE)]  # back from the rate `speed` left behind
    return effects


def sox(audio: np.ndarray, effects: list, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Run audio [T] float32 at 16 kHz through a sox effect chain; return [T'] at `rate_out`."""
    if shutil.which("sox") is None:
        raise VoxlmError("`sox` is not installed (needed for audio augmentation); "
                         "run `sudo scripts/install-system.sh`")
    raw = (np.ascontiguousarray(audio, dtype=np.float32) / HEADROOM).tobytes()
    cmd = ["sox", "-D", "-V1", "-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1", "-",
           "-t", "f32", "-r", str(rate_out), "-c", "1", "-", *effects]
    proc = subprocess.run(cmd, input=raw, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VoxlmError(f"sox {' '.join(effects)} failed: {err[-1] if err else proc.returncode}; "
                         "check the augment settings or reinstall sox")
    return np.frombuffer(proc.stdout, dtype=np.float32) * HEADROOM  # [T']


def _fit_length(audio: np.ndarray, length: int, tail_s: float) -> np.ndarray:
    """Pad or cut audio [T] to `length` samples, keeping up to `tail_s` seconds of audible tail."""
    if len(audio) < length:
        return np.concatenate([audio, np.zeros(length - len(audio), np.float32)])
    tail = audio[length: length + int(tail_s * SAMPLE_RATE)]
    if tail.size:
        floor = float(np.abs(audio).max()) * 10 ** (TAIL_FLOOR_DB / 20)
        loud = np.nonzero(np.abs(tail) > floor)[0]
        tail = tail[: loud[-1] + 1] if loud.size else tail[:0]
    return np.concatenate([audio[:length], tail]).astype(np.float32)


def speech_power(audio: np.ndarray) -> float:
    """Mean power of the active part of audio [T]: 20 ms blocks within GATE_DB of the loudest,
    so pauses do not count as speech. 0.0 for silence."""
    block = SAMPLE_RATE // 50  # 20 ms
    n = max(len(audio) // block, 1)
    frames = np.resize(np.asarray(audio, np.float64), n * block).reshape(n, block)
    energy = np.mean(np.square(frames), axis=1)  # [n]
    if energy.max() <= 0:
        return 0.0
    return float(energy[energy >= energy.max() * 10 ** (-GATE_DB / 10)].mean())


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise [n] with a white, pink (1/f) or brown (1/f^2) power spectrum."""
    white = rng.standard_normal(n)
    if colour == "white" or n < 2:
        noise = white
    else:
        spectrum = np.fft.rfft(white)  # [n // 2 + 1]
        freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
        freqs[0] = freqs[1]  # keep DC finite; it is removed below
        spectrum /= freqs ** (0.5 if colour == "pink" else 1.0)  # amplitude ~ f^-1/2 or f^-1
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
    return noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)


def add_noise(audio: np.ndarray, snr_db: float, colour: str,
              rng: np.random.Generator) -> np.ndarray:
    """Add noise at exactly `snr_db` below the speech power (speech_power); silence stays as is."""
    power = speech_power(audio)
    if power <= 0:
        return audio
    noise = coloured_noise(len(audio), colour, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """Narrowband phone line: 300-3400 Hz band, 8 kHz, G.711 mu-law 8-bit, back to 16 kHz."""
    narrow = sox(audio, ["sinc", PHONE_BAND], rate_out=PHONE_RATE)  # [T / 2] at 8 kHz
    peak = max(float(np.abs(narrow).max()), 1e-9) if narrow.size else 1.0
    x = np.clip(narrow / peak, -1.0, 1.0)
    code = np.round(np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU) * 127) / 127  # 8 bits
    narrow = np.sign(code) * np.expm1(np.abs(code) * np.log1p(MU)) / MU * peak
    out = resample(narrow.astype(np.float32), PHONE_RATE, SAMPLE_RATE)
    return _fit_length(out, len(audio), 0.0)


def scale_words(words: list, factor: float, span: float) -> list:
    """Multiply word times by `factor`, clip to [0, span] s; keeps Word tuples or dicts."""
    out = []
    for w in words:
        if isinstance(w, dict):
            out.append({**w, "start": _clip(w["start"] * factor, span),
                        "end": _clip(w["end"] * factor, span)})
        else:
            out.append(Word(w.w, _clip(w.start * factor, span), _clip(w.end * factor, span)))
    return out


def _clip(t: float, span: float) -> float:
    return round(min(max(float(t), 0.0), span), 3)
