"""Stream layouts: how one item's speech codes, word timings and text tokens become the frames
the LM models (`model.LM`, tokens [B, S, T]), and back. Pure data transforms, numpy in and out.

Frames [S, L] int64, S = config.n_streams, one column per codec frame (12.5 Hz):

    row 0               text: tokenizer id + TEXT_OFFSET, or TEXT_PAD_ID / TEXT_EOW_ID
    rows 1..n_q         model audio codebooks 1..n_q (codes 0..card-1)
    rows n_q+1..2 n_q   user audio codebooks (only with config.user_audio)

Every layout follows the same rules:
- Column 0 is the start frame: config.text_start_id and config.audio_pad_id in every row. The LM
  predicts column 1 from it, so generation begins with `LMGen.step(frames[:, 0])`.
- Audio rows are delayed by config.delays (`delays.delay_codes`: codebook 1 by 0 frames, the
  others by d = config.acoustic_delay), and the frames run d columns past the last audio frame
  so that every delayed code is kept. Inverses undelay and keep the leading run of frames whose
  codebooks are all real codes, which drops those d columns (and any incomplete generated tail).
- A stream the layout does not use holds its "not started" id (text_start_id, audio_pad_id): it
  is input only, and `lm_loss` ignores it as a target.
- Text ids: tokenizer ids shifted by TEXT_OFFSET = 2, so text_card = vocab_size + 2
  (`text_card`). TEXT_PAD_ID (0) means "no text at this frame"; TEXT_EOW_ID (1) is Moshi's
  end-of-padding: the frame just before each word's first token (so the model knows a word
  starts next frame, even when the previous word's tokens ran right up to it).

The four layouts (DESIGN.md 5), and text alone:

    continuation(codes)                 speech only: model audio, text row not started
    interleave(segments)                SpiRit-LM: spans of words alternate between text frames
                                        (one token per frame, no audio) and speech frames (text
                                        TEXT_PAD_ID, audio), switching at word boundaries; the
                                        text row alone tells which modality each frame is
    aligned(codes, words, tokens)       Moshi's inner monologue: each word's tokens start at the
                                        frame its audio starts, padding between words. text_delay
                                        > 0 frames: text lags audio (ASR); < 0: text leads (TTS)
    duplex(user, model, words, tokens)  aligned model text and audio plus the user's audio
    text_only(words, tokens, length)    the model's text row alone, audio not started: text
                                        facts mixed into aligned or duplex training

Word timings are manifest words ({"w", "start", "end"} in seconds, or objects with those
attributes), in time order; `tokenize_words` gives the token lists the layouts take, one per word.
Token shards on disk are frames.T ([L, S], int32 once text ids exceed int16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .delays import delay_codes, undelay_codes
from .model import TEXT_EOW_ID, TEXT_PAD_ID, LMConfig

TEXT_OFFSET = TEXT_EOW_ID + 1  # 2: text id = tokenizer id + TEXT_OFFSET
FRAME_RATE = 12.5  # Hz: the codec's CodecConfig().frame_rate, 16 kHz / 1280-sample hop
TEXT, SPEECH = "text", "speech"  # segment kinds of the interleaved layout


def text_card(vocab_size: int) -> int:
    """LMConfig.text_card for a tokenizer of `vocab_size` ids (the reserved ids come first)."""
    return vocab_size + TEXT_OFFSET


def tokenize_words(words, tokenizer) -> list:
    """Token ids per word, [[int]]: the first word as written, the others after a space, so that
    the concatenation encodes the sentence as the tokenizer would (sentencepiece ▁ prefixes)."""
    out = []
    for i, word in enumerate(words):
        text = _get(word, "w")
        ids = tokenizer.encode(text if i == 0 else " " + text)
        if not ids:
            raise ValueError(f"word {i} ({text!r}) has no tokens")
        out.append(list(ids))
    return out


# ---------------------------------------------------------------- continuation

def continuation(codes, config: LMConfig) -> np.ndarray:
    """Speech only. codes [K, T] (K >= n_q; the first n_q are used) -> frames [S, 1 + T + d]."""
    codes = _codes(codes, config, "codes")
    frames = _empty(config, 1 + codes.shape[1] + _max_delay(config))
    _put_audio(frames, codes, config, start=1)
    return frames


def from_continuation(frames, config: LMConfig) -> np.ndarray:
    """frames [S, L] -> model codes [n_q, T], T = L - 1 - d for frames from `continuation`."""
    frames = _frames(frames, config)
    return _get_audio(frames, config, start=1)


# ---------------------------------------------------------------- interleave

class Segment(NamedTuple):
    kind: str  # TEXT or SPEECH
    tokens: tuple = ()  # text: tokenizer ids
    codes: np.ndarray | None = None  # speech: [n_q, n] codes


@dataclass(frozen=True)
class InterleaveOptions:
    min_words: int = 1  # words per span, drawn uniformly in [min_words, max_words]
    max_words: int = 10
    speech_first: float = 0.5  # probability that the first span is speech


def sample_modalities(n_words: int, rng: np.random.Generator,
                      options: InterleaveOptions = InterleaveOptions()) -> list:
    """SpiRit-LM style: the modality of each word, [TEXT | SPEECH] * n_words, in spans of random
    length that alternate."""
    if not 1 <= options.min_words <= options.max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {options}")
    kind = SPEECH if rng.random() < options.speech_first else TEXT
    out = []
    while len(out) < n_words:
        out += [kind] * int(rng.integers(options.min_words, options.max_words + 1))
        kind = TEXT if kind == SPEECH else SPEECH
    return out[:n_words]


def word_cuts(words, n_frames: int, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Frame boundaries between words: [N + 1] ints, 0 = cuts[0] <= ... <= cuts[N] = n_frames;
    word i owns frames cuts[i]:cuts[i+1]. An inner cut is the frame boundary nearest the middle
    of the gap (or overlap) between two words; silence before the first word and after the last
    belongs to it."""
    times = _times(words, n_frames, frame_rate)  # [N, 2]
    middle = (times[:-1, 1] + times[1:, 0]) / 2
    inner = np.clip(np.floor(middle * frame_rate + 0.5).astype(np.int64), 0, n_frames)
    return np.maximum.accumulate(np.concatenate([[0], inner, [n_frames]]).astype(np.int64))


def interleave_segments(codes, words, word_tokens, modalities, config: LMConfig,
                        frame_rate: float = FRAME_RATE) -> list:
    """Cut one utterance into alternating segments at word boundaries. codes [K, T]; words,
    word_tokens (tokenizer ids per word) and modalities (TEXT/SPEECH per word) of equal length.
    A text segment holds its words' tokens; a speech segment the codes of its words' frames
    (`word_cuts`). Speech spans that cover no frame are dropped and their neighbours merged."""
    codes = _codes(codes, config, "codes")
    _check_tokens(word_tokens, len(words), config)
    if len(modalities) != len(words) or not set(modalities) <= {TEXT, SPEECH}:
        raise ValueError(f"need one of {TEXT!r}/{SPEECH!r} per word ({len(words)}), "
                         f"got {list(modalities)[:8]}...")
    cuts = word_cuts(words, codes.shape[1], frame_rate)
    segments = []
    for i, kind in enumerate(modalities):
        if kind == TEXT:
            seg = Segment(TEXT, tuple(int(t) for t in word_tokens[i]))
        elif cuts[i + 1] > cuts[i]:
            seg = Segment(SPEECH, codes=codes[:, cuts[i]:cuts[i + 1]])
        else:
            continue
        if segments and segments[-1].kind == kind:  # the same modality continues
            last = segments.pop()
            seg = (Segment(TEXT, last.tokens + seg.tokens) if kind == TEXT else
                   Segment(SPEECH, codes=np.concatenate([last.codes, seg.codes], axis=1)))
        segments.append(seg)
    return segments


def interleave(segments, config: LMConfig) -> np.ndarray:
    """Alternating segments -> frames [S, L]. A text segment is one frame per token (audio rows
    not started); a speech segment of n frames takes n + d frames (text TEXT_PAD_ID, audio
    delayed within the segment, codebook 1 not started in the last d)."""
    parts = [_empty(config, 1)]
    for i, seg in enumerate(segments):
        if seg.kind not in (TEXT, SPEECH):
            raise ValueError(f"segment {i} has kind {seg.kind!r}; use {TEXT!r} or {SPEECH!r}")
        if i and segments[i - 1].kind == seg.kind:
            raise ValueError(f"segments {i - 1} and {i} are both {seg.kind}: segments must "
                             "alternate (merge them)")
        if seg.kind == TEXT:
            _check_ids(seg.tokens, config, f"segment {i}")
            part = _empty(config, len(seg.tokens))
            part[0] = np.asarray(seg.tokens, np.int64) + TEXT_OFFSET
        else:
            codes = _codes(seg.codes, config, f"segment {i} codes")
            if codes.shape[1] == 0:
                raise ValueError(f"segment {i} is speech with no frames")
            part = _empty(config, codes.shape[1] + _max_delay(config))
            part[0] = TEXT_PAD_ID
            _put_audio(part, codes, config, start=0)
        parts.append(part)
    return np.concatenate(parts, axis=1)


def from_interleave(frames, config: LMConfig) -> list:
    """frames [S, L] -> alternating segments. Runs of TEXT_PAD_ID in the text row are speech,
    runs of tokenizer ids are text; other reserved ids are skipped."""
    frames = _frames(frames, config)
    text = frames[0, 1:]
    kinds = np.where(text == TEXT_PAD_ID, 0, np.where(text >= TEXT_OFFSET, 1, -1))
    kinds = np.where(text >= config.text_start_id, -1, kinds)  # [L-1]: 0 speech, 1 text, -1 skip
    segments = []
    for kind, start, end in _runs(kinds):
        if kind == 1:
            tokens = tuple(int(t) for t in text[start:end] - TEXT_OFFSET)
            if segments and segments[-1].kind == TEXT:  # a skipped id between two text runs
                tokens = segments.pop().tokens + tokens
            segments.append(Segment(TEXT, tokens))
        elif kind == 0:
            codes = _get_audio(frames[:, 1 + start:1 + end], config, start=0)
            if codes.shape[1]:
                segments.append(Segment(SPEECH, codes=codes))
    return segments


# ---------------------------------------------------------------- aligned and duplex

class AlignedStreams(NamedTuple):
    codes: np.ndarray  # [n_q, T] model audio
    words: list  # [[int]] tokenizer ids per word
    word_frames: list  # [int] audio frame at which each word's first token sits
    user_codes: np.ndarray | None = None  # [n_q, T] user audio (duplex)


def aligned(codes, words, word_tokens, config: LMConfig, text_delay: int = 0,
            frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Time-aligned text. codes [K, T], words with start times, word_tokens per word ->
    frames [S, 1 + T + |text_delay| + d] (longer if the last words' tokens run past the end).

    Word i's first token sits at audio frame floor(start_i * frame_rate), or later when the
    previous word's tokens (and this word's TEXT_EOW_ID) need the room; TEXT_PAD_ID elsewhere.
    text_delay > 0: text lags the audio by that many frames (ASR: hear, then write);
    text_delay < 0: audio lags the text (TTS: read, then speak)."""
    return _aligned(codes, None, words, word_tokens, config, text_delay, frame_rate)


def from_aligned(frames, config: LMConfig, text_delay: int = 0,
                 frame_rate: float = FRAME_RATE) -> AlignedStreams:
    """frames [S, L] -> AlignedStreams. A word is a run of tokenizer ids in the text row;
    word_frames are in the audio's frames (text_delay removed); seconds = frame / frame_rate."""
    return _from_aligned(frames, config, text_delay, user=False)


def duplex(user_codes, model_codes, words, word_tokens, config: LMConfig, text_delay: int = 0,
           frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Full duplex: the user's audio in, the model's aligned text and audio out. user_codes and
    model_codes [K, T] (dialogue channels 0 and 1), words and word_tokens: the model's own words
    (the assistant channel's timings) -> frames [S, L] as in `aligned`, user rows filled. Both
    audio streams share the audio frames, so they stay in step."""
    if not config.user_audio:
        raise ValueError("the duplex layout needs a user audio stream: LMConfig(user_audio=True)")
    return _aligned(model_codes, user_codes, words, word_tokens, config, text_delay, frame_rate)


def from_duplex(frames, config: LMConfig, text_delay: int = 0) -> AlignedStreams:
    """frames [S, L] -> AlignedStreams with user_codes."""
    if not config.user_audio:
        raise ValueError("the duplex layout needs a user audio stream: LMConfig(user_audio=True)")
    return _from_aligned(frames, config, text_delay, user=True)


def text_only(words, word_tokens, config: LMConfig, length: int,
              frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Text without speech: the words in the model's text row, placed by their (given) timings
    as in `aligned`, every audio row "not started" (input only, never a target) -> frames
    [S, length]. Words whose tokens would run past the frames are left out."""
    _check_tokens(word_tokens, len(words), config)
    text, _ = place_words(words, word_tokens, length, 1, frame_rate)
    frames = _empty(config, length)
    _write_text(frames[0], [(eow, ids) for eow, ids in text if eow + len(ids) < length])
    return frames


def channel_words(row: dict, channel: int) -> list:
    """The words of one channel of a dialogue manifest row (0 user, 1 assistant), in time order."""
    return [w for w in row["words"] if w.get("channel") == channel]


def _aligned(codes, user_codes, words, word_tokens, config, text_delay, frame_rate):
    codes = _codes(codes, config, "codes")
    length = codes.shape[1]
    if user_codes is not None:
        user_codes = _codes(user_codes, config, "user_codes")
        if user_codes.shape[1] != length:
            raise ValueError(f"user_codes has {user_codes.shape[1]} frames and model codes "
                             f"{length}: the two channels must be the same length")
    _check_tokens(word_tokens, len(words), config)
    text_delay = int(text_delay)
    text_at, audio_at = 1 + max(text_delay, 0), 1 + max(-text_delay, 0)  # first column of each
    text, cursor = place_words(words, word_tokens, length, text_at, frame_rate)
    frames = _empty(config, max(1 + length + abs(text_delay) + _max_delay(config), cursor))
    _write_text(frames[0], text)
    _put_audio(frames, codes, config, start=audio_at)
    if user_codes is not None:
        _put_audio(frames, user_codes, config, start=audio_at, user=True)
    return frames


def listen_row(user_words, word_tokens, config: LMConfig, length: int, listen_delay: int,
               text_delay: int = 0, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """The user's words as a text row [length] for the listen head (`LMConfig.listen`): placed
    by the rules of the model's text row, each word lagging its audio by `listen_delay` frames
    (hear, then write), for duplex frames of `length` columns laid out with `text_delay`. A
    target only, never an input; tokens that would run past the frames are cut."""
    if listen_delay < 0:
        raise ValueError(f"listen_delay must be >= 0 frames, got {listen_delay}")
    _check_tokens(word_tokens, len(user_words), config)
    audio_at = 1 + max(-int(text_delay), 0)
    text, _ = place_words(user_words, word_tokens, length, audio_at + int(listen_delay),
                           frame_rate)
    row = np.full(length + max((c + 1 + len(t) for c, t in text), default=0), config.text_start_id,
                  np.int64)
    _write_text(row, text)
    return row[:length]


def place_words(words, word_tokens, n_frames: int, text_at: int, frame_rate: float):
    """-> ([(column of the word's TEXT_EOW_ID, ids)], first free column). Word i's first token
    sits at column text_at + floor(start_i * frame_rate), or later when the previous word's
    tokens need the room."""
    starts = np.floor(_times(words, n_frames, frame_rate)[:, 0] * frame_rate).astype(np.int64)
    text, cursor = [], 1  # (column, ids) of each word; first free text column
    for start, tokens in zip(starts, word_tokens):
        eow = max(text_at + int(start) - 1, cursor)
        text.append((eow, tokens))
        cursor = eow + 1 + len(tokens)
    return text, cursor


def _write_text(row: np.ndarray, text):
    """Fill a text row in place: TEXT_PAD_ID from column 1, each word's EOW and ids."""
    row[1:] = TEXT_PAD_ID
    for eow, tokens in text:
        row[eow] = TEXT_EOW_ID
        row[eow + 1:eow + 1 + len(tokens)] = np.asarray(tokens, np.int64) + TEXT_OFFSET


def _from_aligned(frames, config, text_delay, user: bool) -> AlignedStreams:
    frames = _frames(frames, config)
    text_delay = int(text_delay)
    text_at, audio_at = 1 + max(text_delay, 0), 1 + max(-text_delay, 0)
    content = (frames[0] >= TEXT_OFFSET) & (frames[0] < config.text_start_id)
    content[0] = False
    words, word_frames = [], []
    for kind, start, end in _runs(content.astype(np.int64)):
        if kind:
            words.append([int(t) for t in frames[0, start:end] - TEXT_OFFSET])
            word_frames.append(start - text_at)
    user_codes = _get_audio(frames, config, audio_at, user=True) if user else None
    return AlignedStreams(_get_audio(frames, config, audio_at), words, word_frames, user_codes)


# ---------------------------------------------------------------- helpers

def _get(word, key):
    return word[key] if isinstance(word, dict) else getattr(word, key)


def _times(words, n_frames: int, frame_rate: float) -> np.ndarray:
    """[N, 2] start and end seconds, checked: in time order, inside the audio (one frame slack)."""
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be > 0 Hz, got {frame_rate}")
    try:
        times = np.array([[_get(w, "start"), _get(w, "end")] for w in words], np.float64)
    except (KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"words need start and end seconds ({error!r})") from None
    times = times.reshape(-1, 2)
    duration = n_frames / frame_rate
    for i, (start, end) in enumerate(times):
        name = f"word {i} ({_get(words[i], 'w')!r})" if _has_w(words[i]) else f"word {i}"
        if not 0 <= start <= end:
            raise ValueError(f"{name} has start {start} s and end {end} s; need 0 <= start <= end")
        if start > duration + 1 / frame_rate:
            raise ValueError(f"{name} starts at {start} s, after the audio ends ({n_frames} frames"
                             f" = {duration:.2f} s at {frame_rate} Hz)")
        if i and start < times[i - 1, 0]:
            raise ValueError(f"{name} starts at {start} s, before word {i - 1} ({times[i - 1, 0]}"
                             " s): words must be in time order")
    return times


def _has_w(word) -> bool:
    return ("w" in word) if isinstance(word, dict) else hasattr(word, "w")


def _check_tokens(word_tokens, n_words: int, config: LMConfig):
    if len(word_tokens) != n_words:
        raise ValueError(f"need one token list per word: {n_words} words, "
                         f"{len(word_tokens)} token lists")
    for i, tokens in enumerate(word_tokens):
        _check_ids(tokens, config, f"word {i}")


def _check_ids(tokens, config: LMConfig, where: str):
    limit = config.text_card - TEXT_OFFSET  # tokenizer ids that fit the text vocabulary
    if len(tokens) == 0:
        raise ValueError(f"{where} has no tokens")
    bad = [int(t) for t in tokens if not 0 <= int(t) < limit]
    if bad:
        raise ValueError(f"{where} has token ids {bad} outside 0..{limit - 1}: text_card "
                         f"{config.text_card} holds {limit} tokenizer ids after {TEXT_OFFSET} "
                         "reserved ones (set it with text_card(vocab_size))")


def _codes(codes, config: LMConfig, name: str) -> np.ndarray:
    """[K, T] array-like (numpy or CPU tensor), K >= n_q -> [n_q, T] int64, checked."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < config.n_q:
        raise ValueError(f"{name} must be [K, T] with K >= n_q = {config.n_q} codebooks, "
                         f"got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, got {codes.dtype}")
    codes = codes[:config.n_q].astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= config.card):
        raise ValueError(f"{name} holds codes outside 0..{config.card - 1} "
                         f"(min {codes.min()}, max {codes.max()})")
    return codes


def _frames(frames, config: LMConfig) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[0] != config.n_streams or frames.shape[1] < 1:
        raise ValueError(f"frames must be [S = {config.n_streams}, L >= 1], got {frames.shape}")
    start = [config.text_start_id] + [config.audio_pad_id] * (config.n_streams - 1)
    if not np.array_equal(frames[:, 0], start):
        raise ValueError("frames must begin with the start frame (text_start_id, audio_pad_id);"
                         " pass the whole layout, column 0 included")
    return frames.astype(np.int64)


def _max_delay(config: LMConfig) -> int:
    return max(config.delays)


def _empty(config: LMConfig, length: int) -> np.ndarray:
    """[S, length] filled with the "not started" ids."""
    frames = np.full((config.n_streams, length), config.audio_pad_id, np.int64)
    frames[0] = config.text_start_id
    return frames


def _audio_rows(config: LMConfig, user: bool):
    first = 1 + config.n_q if user else 1
    return slice(first, first + config.n_q), config.delays[first:first + config.n_q]


def _put_audio(frames, codes, config: LMConfig, start: int, user: bool = False):
    """Write codes [n_q, T], delayed, into frames' audio rows from column `start`, in place."""
    import torch

    rows, delays = _audio_rows(config, user)
    length = codes.shape[1] + max(delays)
    padded = np.full((config.n_q, length), config.audio_pad_id, np.int64)
    padded[:, :codes.shape[1]] = codes
    delayed = delay_codes(torch.from_numpy(padded)[None], delays, config.audio_pad_id)[0]
    frames[rows, start:start + length] = delayed.numpy()


def _get_audio(frames, config: LMConfig, start: int, user: bool = False) -> np.ndarray:
    """Audio rows from column `start`, undelayed: the leading frames whose codes are all real."""
    import torch

    rows, delays = _audio_rows(config, user)
    part = np.ascontiguousarray(frames[rows, start:])  # [n_q, M]
    codes = undelay_codes(torch.from_numpy(part)[None], delays, config.audio_pad_id)[0].numpy()
    real = (codes < config.card).all(axis=0) & (codes >= 0).all(axis=0)  # [M]
    n = int(np.argmin(real)) if not real.all() else real.size
    return codes[:, :n]


def _runs(values: np.ndarray):
    """(value, start, end) of each maximal run of equal values in a 1-D array."""
    if values.size == 0:
        return
    edges = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate([[0], edges, [values.size]])
    for start, end in zip(bounds[:-1], bounds[1:]):
        yield int(values[start]), int(start), int(end)
