"""Audio I/O: the one module that reads or writes audio files.

Everything inside voxlm is 16 kHz mono float32 in [-1, 1]. `load_audio` accepts wav/flac/ogg/mp3
at any rate, channel count and bit depth; `save_audio` writes wav/flac atomically (temp file in the
same folder, then rename), so a killed process never leaves a half-written file behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # Hz, the rate of every signal inside voxlm
MAX_SECONDS = 3600.0  # default limit on one file's duration; callers may pass their own
READABLE = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
WRITABLE = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


def _error(path, problem: str, fix: str):
    from .errors import VoxlmError

    return VoxlmError(f"{path}: {problem}; {fix}")


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample [T] or [T, C] float32 audio with soxr (high quality)."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)


def check_audio(audio: np.ndarray, name="audio") -> np.ndarray:
    """Reject empty audio and NaN/inf samples with a clear error; return float32 audio."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise _error(name, "audio has zero length", "pass audio with at least one sample")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise _error(name, f"audio has {bad} NaN/inf samples", "fix or re-export the source audio")
    return audio


def _wav_missing_bytes(path: Path) -> int:
    """Bytes a RIFF/WAVE file's data chunk declares beyond the end of the file (0 if complete).

    libsndfile quietly shortens a cut wav to what is there, so a truncated download would load as
    a shorter clip; the header still says how long it should be."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":  # 0 / 0xFFFFFFFF: written by a stream that never knew its length
                missing = pos + 8 + n - size
                return missing if n not in (0, 0xFFFFFFFF) and missing > n // 100 else 0
            pos += 8 + n + (n & 1)
    return 0


def load_audio(path, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS,
               mono: bool = True) -> np.ndarray:
    """Read an audio file into float32 at `sample_rate`: [T] when mono, else [T, C].

    Raises VoxlmError with a one-line message for a missing path, a directory, an empty,
    truncated or non-audio file, NaN/inf samples, zero length, or a file longer than max_seconds.
    """
    import soundfile as sf

    path = Path(path)
    if not max_seconds > 0:
        raise _error(path, f"a limit of {max_seconds} s admits no audio", "pass a positive limit")
    if not path.exists():
        raise _error(path, "no such file", "check the path")
    if path.is_dir():
        raise _error(path, "is a directory, not an audio file", "pass a wav/flac/ogg/mp3 file")
    if path.stat().st_size == 0:
        raise _error(path, "file is empty (0 bytes)", "pass a wav/flac/ogg/mp3 file with audio in it")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile says "Format not recognised", "unknown format", ...
        reason = str(exc).split(":")[-1].strip() or "unknown format"
        raise _error(path, f"not a readable audio file ({reason})",
                     f"pass one of {', '.join(READABLE)}") from None
    missing = _wav_missing_bytes(path) if info.format == "WAV" else 0
    if missing:
        raise _error(path, f"file is truncated ({missing} bytes of audio missing)",
                     "re-export or re-download it")
    if info.frames > 0 and info.frames / info.samplerate > max_seconds:
        raise _error(path, f"audio is {info.frames / info.samplerate:.0f} s long, over the "
                     f"{max_seconds:.0f} s limit", "cut it into shorter files or raise the limit")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as exc:
        raise _error(path, f"file is truncated or corrupt ({str(exc).strip().splitlines()[-1]})",
                     "re-export or re-download it") from None
    if audio.shape[0] == 0:
        raise _error(path, "audio has zero length", "pass a file with at least one sample")
    if info.frames > 0 and audio.shape[0] < info.frames * 0.99 and info.format in ("WAV", "FLAC"):
        raise _error(path, f"file is truncated ({audio.shape[0]} of {info.frames} frames)",
                     "re-export or re-download it")
    if audio.shape[0] / rate > max_seconds:
        raise _error(path, f"audio is {audio.shape[0] / rate:.0f} s long, over the "
                     f"{max_seconds:.0f} s limit", "cut it into shorter files or raise the limit")
    check_audio(audio, path)
    if mono:
        audio = audio.mean(axis=1)  # [T]
    audio = resample(audio, rate, sample_rate)
    if audio.shape[0] == 0:  # one sample at 44.1 kHz is none at 16 kHz
        raise _error(path, f"audio is shorter than one sample at {sample_rate} Hz",
                     "pass a file with more audio in it")
    return audio


def save_audio(path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write [T] or [T, C] float32 audio as 16-bit wav or flac, atomically; returns the path."""
    import soundfile as sf

    from .data import file_mode

    path = Path(path)
    kind = WRITABLE.get(path.suffix.lower())
    if kind is None:
        raise _error(path, f"cannot write '{path.suffix}' files", "use a .wav or .flac name")
    audio = check_audio(audio, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, np.clip(audio, -1.0, 1.0), sample_rate, format=kind[0], subtype=kind[1])
        os.chmod(tmp, file_mode())  # as a plain open() would make it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rms_db(audio: np.ndarray) -> float:
    """Root-mean-square level in dB full scale (-120 for silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-6))


def normalize_loudness(audio: np.ndarray, target_db: float = -23.0, peak: float = 0.95) -> np.ndarray:
    """Scale speech to `target_db` RMS measured over its active part, without clipping.

    Active part: 20 ms blocks within 40 dB of the loudest block, so pauses do not pull the level
    down (a simple stand-in for ITU-R BS.1770 gating that suits short speech clips).
    """
    audio = np.asarray(audio, dtype=np.float32)
    block = SAMPLE_RATE // 50  # 20 ms
    n = len(audio) // block
    if n == 0 or not np.any(audio):
        return audio.copy()
    energy = np.mean(np.square(audio[: n * block].reshape(n, block), dtype=np.float64), axis=1)
    level = 10 * np.log10(np.maximum(energy, 1e-12))
    active = energy[level > level.max() - 40.0]
    gain = 10 ** (target_db / 20.0) / np.sqrt(active.mean())
    gain = min(gain, peak / max(float(np.abs(audio).max()), 1e-9))
    return (audio * gain).astype(np.float32)
