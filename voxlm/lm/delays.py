"""Acoustic delay: a data layout. Row k of codes [B, K, T] is shifted right by delays[k] frames,
so at frame t the model sees codebook 1 of frame t with codebooks 2..K of frame t - d (Moshi:
the fine codebooks are predicted once the semantic one is known). Frames without a value hold
the pad / "not started" id (the codebook size: 1024 for the codec).

    delayed = delay_codes(codes, [0, 1, 1, ...])       # [B, K, T], first frames padded
    codes   = undelay_codes(delayed, [0, 1, 1, ...])   # [B, K, T], last frames padded
"""
from __future__ import annotations

import torch

AUDIO_PAD_ID = 1024  # codec codebook size: the "not started" id of LMConfig(card=1024)


def _delays(delays, rows: int) -> list:
    delays = [delays] * rows if isinstance(delays, int) else list(delays)
    if len(delays) != rows or min(delays) < 0:
        raise ValueError(f"need {rows} delays >= 0, got {delays}")
    return delays


def delay_codes(codes: torch.Tensor, delays, pad_id: int = AUDIO_PAD_ID) -> torch.Tensor:
    """codes [B, K, T] -> [B, K, T]: out[:, k, t] = codes[:, k, t - delays[k]], pad before."""
    out = torch.full_like(codes, pad_id)
    length = codes.shape[-1]
    for k, d in enumerate(_delays(delays, codes.shape[1])):
        if d < length:
            out[:, k, d:] = codes[:, k, :length - d]
    return out


def undelay_codes(codes: torch.Tensor, delays, pad_id: int = AUDIO_PAD_ID) -> torch.Tensor:
    """The inverse: [B, K, T] -> [B, K, T], out[:, k, t] = codes[:, k, t + delays[k]], pad after."""
    out = torch.full_like(codes, pad_id)
    length = codes.shape[-1]
    for k, d in enumerate(_delays(delays, codes.shape[1])):
        if d < length:
            out[:, k, :length - d] = codes[:, k, d:]
    return out
