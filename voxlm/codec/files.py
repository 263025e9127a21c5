"""The codec on files: encode, decode and round-trip, offline or frame by frame.

Code files are .npy arrays of int16 [K, T] (K codebooks, T frames at 12.5 Hz). With the
input's pitch (`--pitch`, pitch_side.py) they are .npz files holding `codes` [K, T] and
`pitch` [4, T] int16.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio, save_audio
from ..data import write_atomic
from ..errors import VoxlmError
from .model import Codec, load_codec
from .pitch_side import SLOTS, PitchEncoder, pitch_codes, pitch_kbps


def pad_to_frames(audio: np.ndarray, hop: int) -> np.ndarray:
    return np.pad(audio, (0, (-len(audio)) % hop))


def encode_audio(codec: Codec, audio: np.ndarray, n_q: int | None = None,
                 streaming: bool = False) -> np.ndarray:
    """audio [N] float32 16 kHz -> codes [K, ceil(N / hop)] int64."""
    hop = codec.config.hop
    x = torch.from_numpy(pad_to_frames(audio.astype(np.float32), hop))[None, None]
    if not streaming:
        return codec.encode(x, n_q)[0].numpy()
    with codec.streaming(1):
        codes = [codec.encode(frame, n_q) for frame in torch.split(x, hop, dim=-1)]
    return torch.cat(codes, dim=-1)[0].numpy()


def decode_codes(codec: Codec, codes: np.ndarray, streaming: bool = False) -> np.ndarray:
    """codes [K, T] -> audio [T * hop] float32."""
    codes = torch.from_numpy(np.asarray(codes, dtype=np.int64))[None]
    if not streaming:
        return codec.decode(codes)[0, 0].numpy()
    with codec.streaming(1):
        audio = [codec.decode(codes[..., t: t + 1]) for t in range(codes.shape[-1])]
    return torch.cat(audio, dim=-1)[0, 0].numpy()


def roundtrip_audio(codec: Codec, audio: np.ndarray, n_q: int | None = None,
                    streaming: bool = False, pitch: bool = False) -> np.ndarray:
    """Encode and decode; streaming runs encode then decode frame by frame, as a live call.
    `pitch`: send the input's pitch beside the codes (frame k decodes once frame k + 1 is in)."""
    if pitch:
        return _roundtrip_with_pitch(codec, audio, n_q, streaming)
    if not streaming:
        out = decode_codes(codec, encode_audio(codec, audio, n_q))
        return out[: len(audio)]
    hop = codec.config.hop
    x = torch.from_numpy(pad_to_frames(audio.astype(np.float32), hop))[None, None]
    with codec.streaming(1):
        out = [codec.decode(codec.encode(frame, n_q)) for frame in torch.split(x, hop, dim=-1)]
    return torch.cat(out, dim=-1)[0, 0].numpy()[: len(audio)]


def _roundtrip_with_pitch(codec: Codec, audio: np.ndarray, n_q: int | None,
                          streaming: bool) -> np.ndarray:
    hop = codec.config.hop
    padded = pad_to_frames(audio.astype(np.float32), hop)
    if not streaming:
        codes = codec.encode(torch.from_numpy(padded)[None, None], n_q)
        pitch = torch.from_numpy(pitch_codes(padded, hop))[None]
        return codec.decode(codes, pitch)[0, 0].numpy()[: len(audio)]
    tracker, waiting, out = PitchEncoder(hop), [], []

    def decode_ready(pitch):  # [S, m]: the pitch of the m oldest frames waiting
        for t in range(pitch.shape[1]):
            out.append(codec.decode(waiting.pop(0), torch.from_numpy(pitch[None, :, t: t + 1])))

    with codec.streaming(1):
        for frame in torch.split(torch.from_numpy(padded)[None, None], hop, dim=-1):
            waiting.append(codec.encode(frame, n_q))  # [1, K, 1]
            decode_ready(tracker.step(frame[0, 0].numpy()))  # the frames before this one
        decode_ready(tracker.flush())
    return torch.cat(out, dim=-1)[0, 0].numpy()[: len(audio)]


def n_q_for(codec: Codec, kbps: float | None, pitch: bool = False) -> int:
    """Codebooks for a total bitrate; with `pitch`, what is left beside the pitch's 0.35 kbps."""
    side = pitch_kbps(codec.config.frame_rate) if pitch else 0.0
    if pitch and not codec.has_pitch_input:
        raise VoxlmError("this codec's decoder takes no pitch (it has the istft decoder)",
                         "leave out --pitch, or use a codec with the harmonic decoder")
    if kbps is None:  # all the codebooks its decoder reads
        return codec.config.decoder_codebooks or codec.config.n_q
    lowest = codec.config.kbps(1) + side
    choices = f"choose one of {', '.join(f'{codec.config.kbps(k) + side:g}' for k in range(1, codec.config.n_q + 1))}"
    if not math.isfinite(kbps):
        raise VoxlmError(f"bitrate {kbps} is not a number of kbps", choices)
    if kbps < lowest - 1e-9:
        raise VoxlmError(f"bitrate {kbps} kbps is below this codec's lowest"
                         f"{' with pitch' if pitch else ''}, {lowest:g} kbps", choices)
    return codec.config.n_q_for_kbps(kbps - side)


def total_kbps(codec: Codec, n_q: int, pitch: bool = False) -> float:
    return codec.config.kbps(n_q) + (pitch_kbps(codec.config.frame_rate) if pitch else 0.0)


def encode_file(source, target, checkpoint=None, kbps: float | None = None,
                pitch: bool = False) -> tuple:
    if pitch and Path(target).suffix != ".npz":
        raise VoxlmError(f"{target}: codes with pitch are written as .npz", "name it OUT.npz")
    codec = load_codec(checkpoint)
    n_q = n_q_for(codec, kbps, pitch)
    audio = load_audio(source)
    codes = encode_audio(codec, audio, n_q)
    buffer = io.BytesIO()
    if pitch:
        np.savez(buffer, codes=codes.astype(np.int16), pitch=pitch_codes(audio, codec.config.hop))
    else:
        np.save(buffer, codes.astype(np.int16))
    write_atomic(Path(target), buffer.getvalue())
    return codes.shape


def decode_file(source, target, checkpoint=None) -> float:
    codec = load_codec(checkpoint)
    try:
        codes, pitch = np.load(source, allow_pickle=False), None
        if isinstance(codes, np.lib.npyio.NpzFile):
            with codes:
                codes, pitch = _npz_parts(source, codes)
    except FileNotFoundError:
        raise VoxlmError(f"code file not found: {source}", "check the path") from None
    except (ValueError, OSError) as error:
        raise VoxlmError(f"{source} is not a .npy code file ({str(error).split('. ')[0]})",
                         "make one with: voxlm codec encode IN.wav OUT.npy") from None
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise VoxlmError(f"{source} holds {codes.dtype} {codes.shape}, codes are integers [K, T]",
                         "make one with: voxlm codec encode IN.wav OUT.npy")
    size, n_q = codec.config.codebook_size, codec.config.n_q
    if not 1 <= codes.shape[0] <= n_q or codes.min() < 0 or codes.max() >= size:
        raise VoxlmError(f"{source}: {codes.shape[0]} codebooks with values {codes.min()}..{codes.max()} "
                         f"do not fit this codec ({n_q} codebooks of {size})",
                         "decode with the codec that encoded it")
    if pitch is not None:
        if not codec.has_pitch_input:
            raise VoxlmError(f"{source} holds pitch, and this codec's decoder takes none",
                             "decode with the codec that encoded it")
        if pitch.shape != (SLOTS, codes.shape[1]) or pitch.min() < 0 or pitch.max() >= 128:
            raise VoxlmError(f"{source}: pitch {pitch.shape} with values {pitch.min()}..{pitch.max()} "
                             f"is not {SLOTS} codes of 0..127 per frame ({codes.shape[1]} frames)",
                             "make it with: voxlm codec encode IN.wav OUT.npz --pitch")
        audio = codec.decode(torch.from_numpy(codes.astype(np.int64))[None],
                             torch.from_numpy(pitch.astype(np.int64))[None])[0, 0].numpy()
    else:
        audio = decode_codes(codec, codes)
    save_audio(target, audio)
    return len(audio) / codec.config.sample_rate


def _npz_parts(source, archive) -> tuple:
    if "codes" not in archive.files or "pitch" not in archive.files:
        raise VoxlmError(f"{source} is a .npz without `codes` and `pitch` arrays",
                         "make one with: voxlm codec encode IN.wav OUT.npz --pitch")
    pitch = archive["pitch"]
    if pitch.ndim != 2 or not np.issubdtype(pitch.dtype, np.integer):
        raise VoxlmError(f"{source}: pitch is {pitch.dtype} {pitch.shape}, not integers [4, T]",
                         "make it with: voxlm codec encode IN.wav OUT.npz --pitch")
    return archive["codes"], pitch


def roundtrip_file(source, target, checkpoint=None, kbps: float | None = None,
                   streaming: bool = False, pitch: bool = False) -> float:
    """-> the bitrate used, kbps."""
    codec = load_codec(checkpoint)
    n_q = n_q_for(codec, kbps, pitch)
    save_audio(target, roundtrip_audio(codec, load_audio(source), n_q, streaming, pitch))
    return total_kbps(codec, n_q, pitch)
