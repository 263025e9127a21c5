"""Codec quality metrics (Codec-SUPERB style): each compares a reference and a decoded signal,
both [N] float32 at 16 kHz and of the same length.

| metric    | better | what                                                                      |
|-----------|--------|---------------------------------------------------------------------------|
| mel       | lower  | mean |log10 mel(ref) - log10 mel(deg)|, 80 HTK mels, 1024/256 STFT       |
| stft      | lower  | multi-resolution STFT: spectral convergence + log-magnitude L1, 3 sizes    |
| si_sdr    | higher | scale-invariant SDR in dB (finite, over 100 dB, for identical signals)    |
| pesq      | higher | ITU-T P.862.2 wideband MOS-LQO (`pesq`, 'wb'); NaN with no utterances     |
| stoi      | higher | short-time objective intelligibility (`pystoi`); NaN when mostly silent    |
| f0_corr   | higher | Pearson correlation of F0 (YIN, below) over frames voiced in both         |
| wer       | lower  | Whisper tiny.en transcript against the text, after normalize_text         |
| spk_sim   | higher | cosine of Resemblyzer speaker embeddings, reference vs decoded             |
| dnsmos    | higher | DNSMOS P.835 overall (OVRL) of the decoded signal alone (`speechmos`)      |

The first six are plain functions; the model-based ones live on `Judges`, which loads Whisper,
Resemblyzer and DNSMOS once, on first use. Nothing heavy is imported at module import.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import VoxlmError
from ..pitch import F0_HOP, F0_MAX, F0_MIN, pitch_track  # noqa: F401  (re-exported)

N_MELS = 80
MEL_FFT, MEL_HOP = 1024, 256  # 64 ms window, 16 ms hop at 16 kHz
LOG_FLOOR = 1e-5  # magnitudes are clamped here before the log (about -100 dB)
STFT_SIZES = ((512, 128), (1024, 256), (2048, 512))  # (n_fft = window, hop)
SI_SDR_EPS = 1e-10  # keeps identical signals finite (about 125 dB for 3 s of speech at -23 dB)
SILENT_PEAK = 1e-4  # a reference whose peak is below this (-80 dBFS) has nothing to judge


def _pair(ref, deg):
    ref = np.asarray(ref, dtype=np.float32).ravel()
    deg = np.asarray(deg, dtype=np.float32).ravel()
    if ref.shape != deg.shape:
        raise VoxlmError(f"reference and decoded audio differ in length ({len(ref)} vs {len(deg)} "
                         "samples); trim or pad the decoded audio to the reference")
    return ref, deg


def _frames(audio: np.ndarray, size: int, hop: int, center: bool = True) -> np.ndarray:
    """[N] -> [T, size] frames, reflect-padded by size // 2 on both sides when centered."""
    if center:
        mode = "reflect" if len(audio) > size // 2 else "constant"
        audio = np.pad(audio, size // 2, mode=mode)
    if len(audio) < size:
        audio = np.pad(audio, (0, size - len(audio)))
    return np.lib.stride_tricks.sliding_window_view(audio, size)[::hop]


def stft_magnitude(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[N] -> [T, n_fft // 2 + 1] magnitude, Hann window of n_fft samples, centered frames."""
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    return np.abs(np.fft.rfft(_frames(audio, n_fft, hop) * window, axis=1)).astype(np.float32)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)  # HTK


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int = MEL_FFT, n_mels: int = N_MELS, rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1], peak 1, edges evenly spaced in mel."""
    fmax = rate / 2 if fmax is None else fmax
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # [M + 2]
    freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)  # [F]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [M, 1] each
    rising = (freqs[None] - lo) / (mid - lo)
    falling = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # [M, F]


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[N] -> [T, 80] log10 mel magnitude (1024-point STFT, 256 hop), floored at 1e-5."""
    mag = stft_magnitude(np.asarray(audio, np.float32), MEL_FFT, MEL_HOP)  # [T, 513]
    return np.log10(np.maximum(mag @ mel_filterbank().T, LOG_FLOOR))


def mel_distance(ref, deg) -> float:
    """Mean absolute difference of log10 mel spectra (0 for identical audio)."""
    ref, deg = _pair(ref, deg)
    return float(np.mean(np.abs(log_mel(ref) - log_mel(deg))))


def stft_distance(ref, deg, sizes=STFT_SIZES) -> float:
    """Multi-resolution STFT distance (Parallel WaveGAN): per size, spectral convergence
    ||S_ref - S_deg||_F / ||S_ref||_F plus mean |log S_ref - log S_deg|; averaged over sizes."""
    ref, deg = _pair(ref, deg)
    total = 0.0
    for n_fft, hop in sizes:
        a, b = stft_magnitude(ref, n_fft, hop), stft_magnitude(deg, n_fft, hop)  # [T, F]
        sc = np.linalg.norm(a - b) / max(float(np.linalg.norm(a)), LOG_FLOOR)
        mag = np.mean(np.abs(np.log(np.maximum(a, LOG_FLOOR)) - np.log(np.maximum(b, LOG_FLOOR))))
        total += float(sc + mag)
    return total / len(sizes)


def si_sdr(ref, deg) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019); NaN for a silent
    reference. Both signals are made zero-mean first."""
    ref, deg = _pair(ref, deg)
    ref = ref.astype(np.float64) - ref.mean()
    deg = deg.astype(np.float64) - deg.mean()
    energy = float(ref @ ref)
    if energy < 1e-8:
        return math.nan
    target = (float(deg @ ref) / energy) * ref
    noise = deg - target
    return float(10.0 * np.log10((target @ target + SI_SDR_EPS) / (noise @ noise + SI_SDR_EPS)))


def pesq_wb(ref, deg) -> float:
    """Wideband PESQ (P.862.2, MOS-LQO about 1.0 to 4.64); NaN for a silent reference, or when
    PESQ finds no utterance in it or the signal is too short."""
    from pesq import PesqError, pesq

    ref, deg = _pair(ref, deg)
    if np.abs(ref).max() < SILENT_PEAK:
        return math.nan
    try:
        return float(pesq(SAMPLE_RATE, ref, deg, "wb"))
    except PesqError:  # NoUtterancesError, BufferTooShortError, ...
        return math.nan


def stoi_score(ref, deg) -> float:
    """STOI (0..1, Taal et al. 2011); NaN when fewer than 30 non-silent 25 ms frames remain
    (pystoi would return 1e-5 with a warning) or the reference is silent."""
    import warnings

    from pystoi import stoi

    ref, deg = _pair(ref, deg)
    if np.abs(ref).max() < SILENT_PEAK:
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi(ref, deg, SAMPLE_RATE, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return score


def f0_correlation(ref, deg, min_frames: int = 10) -> float:
    """Pearson correlation of the YIN F0 of both signals over the frames voiced in both; NaN when
    fewer than `min_frames` such frames (or a flat contour)."""
    ref, deg = _pair(ref, deg)
    f_ref, v_ref = pitch_track(ref)
    f_deg, v_deg = pitch_track(deg)
    both = v_ref & v_deg
    if both.sum() < min_frames:
        return math.nan
    a, b = f_ref[both].astype(np.float64), f_deg[both].astype(np.float64)
    if a.std() < 1e-6 or b.std() < 1e-6:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def normalize_text(text: str) -> list:
    """Words for WER: numbers spoken as words (voxlm.synth.text.spoken: '12' -> 'twelve',
    '5%' -> 'five percent'), lowercase, hyphens split, all other punctuation dropped."""
    from ..synth.text import spoken

    text = spoken(str(text).replace("-", " ")).lower()
    return re.sub(r"[^a-z ]", "", text).split()


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two word lists (substitutions + deletions + insertions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_errors(ref: str, hyp: str):
    """(word errors, reference words) after normalize_text: sum both over files for pooled WER."""
    r, h = normalize_text(ref), normalize_text(hyp)
    return edit_distance(r, h), len(r)


def word_error_rate(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref` (0.0 = perfect; can exceed 1 with insertions).
    An empty reference gives 0.0 for an empty hypothesis, else 1.0."""
    errors, words = word_errors(ref, hyp)
    return errors / words if words else float(errors > 0)


class Judges:
    """The model-based judges, each loaded on first use and kept: Whisper tiny.en (CTranslate2,
    int8) for WER, Resemblyzer for speaker similarity, DNSMOS P.835 for OVRL. `threads` bounds the
    CPU threads each model uses."""

    def __init__(self, threads: int = 1, beam_size: int = 5):
        self.threads = threads
        self.beam_size = beam_size  # Whisper beam width: 5 (as Whisper's own eval) or 1 (greedy)
        self._whisper = None
        self._speaker = None
        self._dnsmos = None

    # ---- Whisper -------------------------------------------------------------------------
    def transcribe(self, audio) -> str:
        """English transcript of [N] float32 16 kHz audio (temperature 0, no previous context)."""
        if self._whisper is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise VoxlmError("faster-whisper is not installed; "
                                 "run `pip install -e '.[eval]'`") from None
            from ..codec.teacher import whisper_model_dir

            self._whisper = WhisperModel(str(whisper_model_dir()), device="cpu",
                                         compute_type="int8", cpu_threads=self.threads)
        segments, _ = self._whisper.transcribe(
            np.asarray(audio, np.float32), language="en", beam_size=self.beam_size,
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def word_errors(self, audio, text: str):
        """(transcript, word errors, reference words) of audio spoken from `text`."""
        hyp = self.transcribe(audio)
        errors, words = word_errors(text, hyp)
        return hyp, errors, words

    # ---- Resemblyzer ---------------------------------------------------------------------
    def _load_speaker(self):
        import importlib.metadata
        import sys
        import types

        try:
            import pkg_resources  # noqa: F401  webrtcvad (under resemblyzer) imports it
            shim = None
        except ImportError:  # gone from setuptools >= 81; webrtcvad only reads its own version
            shim = types.ModuleType("pkg_resources")
            shim.get_distribution = lambda name: types.SimpleNamespace(
                version=importlib.metadata.version(name))
            sys.modules["pkg_resources"] = shim
        try:
            import warnings

            import torch

            with warnings.catch_warnings():  # it imports scipy.ndimage.morphology (deprecated)
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError:
            raise VoxlmError("resemblyzer is not installed; "
                             "run `pip install -e '.[eval]'`") from None
        finally:
            if shim is not None and sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]
        if torch.get_num_threads() > self.threads:
            torch.set_num_threads(self.threads)
        self._speaker = (VoiceEncoder("cpu", verbose=False), preprocess_wav)

    def speaker_embedding(self, audio):
        """[256] unit-norm Resemblyzer embedding, or None when under 0.5 s of speech remains after
        its voice-activity trimming."""
        if self._speaker is None:
            self._load_speaker()
        encoder, preprocess = self._speaker
        wav = preprocess(np.asarray(audio, np.float32), source_sr=SAMPLE_RATE)
        if len(wav) < SAMPLE_RATE // 2:
            return None
        return encoder.embed_utterance(wav)

    def speaker_similarity(self, ref, deg, ref_embedding=None) -> float:
        """Cosine similarity of speaker embeddings (1 = same voice); NaN for near-silent audio.
        Pass `ref_embedding` to reuse the reference's embedding across systems."""
        a = self.speaker_embedding(ref) if ref_embedding is None else ref_embedding
        b = self.speaker_embedding(deg)
        if a is None or b is None:
            return math.nan
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    # ---- DNSMOS --------------------------------------------------------------------------
    def dnsmos(self, audio) -> dict:
        """DNSMOS P.835 of one clip: {'ovrl', 'sig', 'bak', 'p808'} MOS (1..5). Clips shorter than
        9 s are tiled to 9 s, as the reference implementation does."""
        if self._dnsmos is None:
            import os

            try:
                import onnxruntime as ort
                from speechmos import dnsmos
            except ImportError:
                raise VoxlmError("speechmos is not installed; "
                                 "run `pip install -e '.[eval]'`") from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            folder = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)),
                                  "dnsmos_models")
            model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its __init__ gives no thread control
            model.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
            model.onnx_sess = ort.InferenceSession(model.primary_model_path, opts,
                                                   providers=["CPUExecutionProvider"])
            model.p808_onnx_sess = ort.InferenceSession(os.path.join(folder, "model_v8.onnx"), opts,
                                                        providers=["CPUExecutionProvider"])
            self._dnsmos = model
        audio = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
        out = self._dnsmos(audio, SAMPLE_RATE, False)
        return {"ovrl": float(out["ovrl_mos"]), "sig": float(out["sig_mos"]),
                "bak": float(out["bak_mos"]), "p808": float(out["p808_mos"])}
