"""Baseline codecs: round trips through the real command-line codecs, for side-by-side tables.

Each function takes [N] float32 16 kHz audio and returns [N] float32 16 kHz audio, time-aligned:
the codec's own delay is dropped from the start and the input is padded with silence so the tail
comes out too.

| name         | tools (Debian package)        | kbps | how                                        |
|--------------|-------------------------------|------|--------------------------------------------|
| codec2-700C  | c2enc / c2dec (codec2)        | 0.7  | 8 kHz raw s16; 28 bits per 40 ms           |
| codec2-1300  | c2enc / c2dec (codec2)        | 1.3  | 8 kHz raw s16; 52 bits per 40 ms           |
| codec2-3200  | c2enc / c2dec (codec2)        | 3.2  | 8 kHz raw s16; 64 bits per 20 ms           |
| opus-6       | opusenc / opusdec (opus-tools)| 6.0  | --bitrate 6 --hard-cbr; decoded at 16 kHz  |
| speex-wb-q1  | speexenc / speexdec (speex)   | 5.75 | --wideband --quality 1                     |

Bitrates are payload bitrates. Measured here on 65 s of speech: `opusinfo` reports 6.001 kbit/s
without Ogg overhead (6.72 with it); `speexenc -V` reports 5750 bps for wideband quality 1 (6.47
kbit/s file size with Ogg framing); the codec2 .bit files round each frame up to whole bytes
(0.8, 1.4, 3.2 kbit/s on disk).

Delays (DELAY_MS) were measured with `measure_delay` on eSpeak and Flite speech: the shift of the
decoded signal that minimises the log-spectral distance to the input (codec2 is a parametric
vocoder with synthetic phase, so waveform cross-correlation is unreliable for it; for Opus and
Speex the waveform cross-correlation peak agrees: 0-1 and 218-223 samples). Opus needs none:
opusdec removes the pre-skip itself.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, resample
from ..errors import VoxlmError

CODEC2_RATE = 8000  # Hz: codec2 is narrowband
CODEC2_KBPS = {"700C": 0.7, "1300": 1.3, "3200": 3.2}
OPUS_KBPS = 6.0
SPEEX_QUALITY = 1
SPEEX_KBPS = 5.75  # speexenc -V: "Bitrate is use: 5750 bps" at wideband quality 1
DELAY_MS = {"codec2-700C": 29.0, "codec2-1300": 19.5, "codec2-3200": 19.5,
            "opus-6": 0.0, "speex-wb-q1": 13.875}  # 232, 156, 156 samples at 8 kHz; 222 at 16 kHz
PACKAGES = {"c2enc": "codec2", "c2dec": "codec2", "opusenc": "opus-tools",
            "opusdec": "opus-tools", "speexenc": "speex", "speexdec": "speex"}
TAIL_MS = 100.0  # silence appended before encoding so the decoder flushes the last frames


def _run(cmd: list, what: str) -> None:
    tool = cmd[0]
    if shutil.which(tool) is None:
        raise VoxlmError(f"`{tool}` is not installed ({what} baseline); run "
                         f"`sudo apt-get install {PACKAGES.get(tool, tool)}`")
    proc = subprocess.run([str(c) for c in cmd], capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = err[-1] if err else f"exit {proc.returncode}"
        raise VoxlmError(f"{what}: `{tool}` failed ({reason}); check the input audio")


def _to_s16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def _padded(audio: np.ndarray, rate: int, delay: int) -> np.ndarray:
    """[N] float32 -> [N + delay + tail] so the codec's delayed output still covers N samples."""
    audio = np.asarray(audio, dtype=np.float32).ravel()
    return np.concatenate([audio, np.zeros(delay + int(TAIL_MS * rate / 1000), np.float32)])


def _fit(decoded: np.ndarray, n: int, delay: int) -> np.ndarray:
    """Drop `delay` leading samples, then trim or zero-pad to n: [M] -> [n] float32."""
    out = np.asarray(decoded, dtype=np.float32)[delay: delay + n]
    return np.pad(out, (0, n - len(out))) if len(out) < n else out


def codec2(audio: np.ndarray, mode: str = "1300", align: bool = True) -> np.ndarray:
    """Round trip through Codec2 `mode` (700C, 1300, 3200): [N] 16 kHz -> [N] 16 kHz."""
    if mode not in CODEC2_KBPS:
        raise VoxlmError(f"unknown codec2 mode '{mode}'; choose from {', '.join(CODEC2_KBPS)}")
    n = len(audio)
    delay = round(DELAY_MS[f"codec2-{mode}"] * CODEC2_RATE / 1000) if align else 0
    narrow = resample(_padded(audio, SAMPLE_RATE, 2 * delay), SAMPLE_RATE, CODEC2_RATE)  # [N / 2]
    with tempfile.TemporaryDirectory(prefix="voxlm-codec2-") as tmp:
        raw, bits, out = Path(tmp) / "in.raw", Path(tmp) / "enc.bit", Path(tmp) / "out.raw"
        _to_s16(narrow).tofile(raw)
        _run(["c2enc", mode, raw, bits], f"codec2 {mode}")
        _run(["c2dec", mode, bits, out], f"codec2 {mode}")
        decoded = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0  # [~N / 2] 8 kHz
    decoded = _fit(decoded, len(narrow), delay)
    return _fit(resample(decoded, CODEC2_RATE, SAMPLE_RATE), n, 0)


def _wav_round_trip(audio: np.ndarray, encode: list, decode: list, what: str, delay: int):
    """Write audio as 16-bit wav, run `encode` (wav -> enc) and `decode` (enc -> wav), read back."""
    import soundfile as sf

    n = len(audio)
    with tempfile.TemporaryDirectory(prefix="voxlm-codec-") as tmp:
        src, enc, out = Path(tmp) / "in.wav", Path(tmp) / "enc.bin", Path(tmp) / "out.wav"
        sf.write(src, _to_s16(_padded(audio, SAMPLE_RATE, delay)), SAMPLE_RATE, subtype="PCM_16")
        _run([*encode, src, enc], what)
        _run([*decode, enc, out], what)
        decoded, rate = sf.read(out, dtype="float32", always_2d=True)  # [M, C]
    decoded = resample(decoded.mean(axis=1), rate, SAMPLE_RATE)
    return _fit(decoded, n, delay)


def opus(audio: np.ndarray, kbps: float = OPUS_KBPS, align: bool = True) -> np.ndarray:
    """Round trip through Opus at `kbps`, hard CBR, 20 ms frames: [N] 16 kHz -> [N] 16 kHz."""
    delay = round(DELAY_MS["opus-6"] * SAMPLE_RATE / 1000) if align else 0
    return _wav_round_trip(audio, ["opusenc", "--quiet", "--bitrate", f"{kbps:g}", "--hard-cbr"],
                           ["opusdec", "--quiet", "--rate", str(SAMPLE_RATE)],
                           f"opus {kbps:g} kbps", delay)


def speex(audio: np.ndarray, quality: int = SPEEX_QUALITY, align: bool = True) -> np.ndarray:
    """Round trip through Speex wideband at `quality` (0..10): [N] 16 kHz -> [N] 16 kHz.
    DELAY_MS holds the delay measured at quality 1; other qualities are not aligned."""
    delay = round(DELAY_MS["speex-wb-q1"] * SAMPLE_RATE / 1000) if align and quality == 1 else 0
    return _wav_round_trip(audio, ["speexenc", "--wideband", "--quality", str(quality)],
                           ["speexdec"], f"speex wideband q{quality}", delay)


def measure_delay(reference: np.ndarray, decoded: np.ndarray, rate: int = SAMPLE_RATE,
                  max_ms: float = 60.0, step_ms: float = 0.5) -> float:
    """Delay in ms of `decoded` behind `reference` (both [N] at `rate`): the shift, in steps of
    step_ms, that minimises the mean |log| STFT| difference (32 ms windows, 4 ms hop). Works for
    parametric codecs whose phase does not follow the input."""
    from .metrics import LOG_FLOOR, stft_magnitude

    n_fft, hop = int(0.032 * rate), int(0.004 * rate)
    reference = np.asarray(reference, np.float32)
    ref = np.log(np.maximum(stft_magnitude(reference, n_fft, hop), LOG_FLOOR))  # [T, F]
    best, best_cost = 0.0, np.inf
    for ms in np.arange(0.0, max_ms + 1e-9, step_ms):
        shift = int(round(ms * rate / 1000))
        out = np.asarray(decoded, np.float32)[shift:]
        m = min(len(out), len(reference))
        spec = np.log(np.maximum(stft_magnitude(out[:m], n_fft, hop), LOG_FLOOR))
        t = min(len(spec), len(ref)) - n_fft // hop  # leave out the zero-padded end
        cost = float(np.mean(np.abs(spec[:t] - ref[:t])))
        if cost < best_cost:
            best, best_cost = float(ms), cost
    return best


def baseline_codecs() -> dict:
    """{name: (kbps, fn)} for every baseline, fn: [N] float32 16 kHz -> [N] float32 16 kHz."""
    from functools import partial

    systems = {f"codec2-{mode}": (kbps, partial(codec2, mode=mode))
               for mode, kbps in CODEC2_KBPS.items()}
    systems["opus-6"] = (OPUS_KBPS, partial(opus, kbps=OPUS_KBPS))
    systems["speex-wb-q1"] = (SPEEX_KBPS, partial(speex, quality=SPEEX_QUALITY))
    return systems


BASELINES = baseline_codecs()  # only partials: tools are looked for when a codec is first run
