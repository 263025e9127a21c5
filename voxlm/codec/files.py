"""The codec on files: encode, decode and round-trip, offline or frame by frame.

Code files are .npy arrays of int16 [K, T] (K codebooks, T frames at 12.5 Hz).
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
                    streaming: bool = False) -> np.ndarray:
    """Encode and decode; streaming runs encode then decode frame by frame, as a live call."""
    if not streaming:
        out = decode_codes(codec, encode_audio(codec, audio, n_q))
        return out[: len(audio)]
    hop = codec.config.hop
    x = torch.from_numpy(pad_to_frames(audio.astype(np.float32), hop))[None, None]
    with codec.streaming(1):
        out = [codec.decode(codec.encode(frame, n_q)) for frame in torch.split(x, hop, dim=-1)]
    return torch.cat(out, dim=-1)[0, 0].numpy()[: len(audio)]


def n_q_for(codec: Codec, kbps: float | None) -> int:
    if kbps is None:  # all the codebooks its decoder reads
        return codec.config.decoder_codebooks or codec.config.n_q
    lowest = codec.config.kbps(1)
    choices = f"choose one of {', '.join(f'{codec.config.kbps(k):g}' for k in range(1, codec.config.n_q + 1))}"
    if not math.isfinite(kbps):
        raise VoxlmError(f"bitrate {kbps} is not a number of kbps", choices)
    if kbps < lowest:
        raise VoxlmError(f"bitrate {kbps} kbps is below this codec's lowest, {lowest:g} kbps", choices)
    return codec.config.n_q_for_kbps(kbps)


def encode_file(source, target, checkpoint=None, kbps: float | None = None) -> tuple:
    codec = load_codec(checkpoint)
    codes = encode_audio(codec, load_audio(source), n_q_for(codec, kbps))
    buffer = io.BytesIO()
    np.save(buffer, codes.astype(np.int16))
    write_atomic(Path(target), buffer.getvalue())
    return codes.shape


def decode_file(source, target, checkpoint=None) -> float:
    codec = load_codec(checkpoint)
    try:
        codes = np.load(source, allow_pickle=False)
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
    audio = decode_codes(codec, codes)
    save_audio(target, audio)
    return len(audio) / codec.config.sample_rate


def roundtrip_file(source, target, checkpoint=None, kbps: float | None = None,
                   streaming: bool = False) -> float:
    """-> the bitrate used, kbps."""
    codec = load_codec(checkpoint)
    n_q = n_q_for(codec, kbps)
    save_audio(target, roundtrip_audio(codec, load_audio(source), n_q, streaming))
    return codec.config.kbps(n_q)
