"""Token shards -> LM training batches: layouts, crops, length buckets, deterministic batches.

    shards = TokenShards("data/tokens")                       # tokenize_corpus.py's folder
    config = config_for_shards(lm_config("base"), shards)     # card, n_q, text_card from the data
    data = LMData(shards, config, LayoutConfig(mode="aligned"), batch_size=16, seed=0)
    microbatches = data.batch(step, rank, world, accum)       # accum x [b, S, T] int64 tensors

A stream is one item's code channel (a dialogue has two) with that channel's words; the duplex
layout takes each dialogue once, the assistant (channel 1) as the model and the user as input.
Aligned and duplex leave out streams without word timings (e.g. imported without alignment:
their text stream would be empty); interleave keeps them as speech only; with none at all these
layouts refuse the data.
Each sample builds its stream's whole layout (`streams.py`) and keeps a random window of
`seq_len` frames when longer. A stream of L frames counts as ceil(L / seq_len) samples per
epoch, so every frame is seen about once an epoch.
With `text_file` (aligned, duplex; training split only), a share `text_share` of samples is text
alone instead: lines of the file in the model's text stream, paced like speech, with the audio
streams "not started" (`streams.text_only`), as long as the sample each replaces: a model sees
facts there many times over that the spoken corpus holds a few times each (e.g. every sum; what
it learns so carries little into conversation: docs/BENCHMARKS.md, "Every sum as text").

Batches are a pure function of (seed, step): the epoch's plan (length buckets, shuffled) comes
from (seed, epoch) and sample i of a step draws its layout choices and crop from
(seed, step, i). So a resumed run gets the batches it would have had, and DDP rank r builds
samples r * B / world .. (r + 1) * B / world - 1 of the same global batch: disjoint slices.
Length buckets: samples are sorted by length into `buckets` groups and a batch comes from one
group, so it is padded (with "not started" ids, ignored by the loss) only to its longest sample.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import VoxlmError
from .model import LMConfig
from .streams import (InterleaveOptions, aligned, continuation, duplex, interleave,
                      interleave_segments, listen_row, sample_modalities, text_card, text_only)
from .tokenize_corpus import FORMAT_VERSION, TOKENIZE_FIX

MODES = ("continuation", "interleave", "aligned", "duplex")
TIMED_MODES = ("interleave", "aligned", "duplex")  # need word timings (manifest "words")
MOSHI_DELAY = 25  # frames: 2 s at 12.5 Hz, Moshi's text-audio delay for its TTS and ASR data
# pacing of text-alone samples, from the assistant's turns of spoken-QA dialogues (10th to 90th
# percentile): seconds from one word's start to the next, and from a line's last word to the next
WORD_STEP_S = (0.15, 0.54)
LINE_GAP_S = (0.93, 3.13)


@dataclass
class LayoutConfig:
    mode: str = "aligned"  # continuation | interleave | aligned | duplex
    seq_len: int = 0  # frames per training sequence (longer layouts: a random window); 0: context
    tts_share: float = 0.5  # aligned: share of samples in the TTS direction (text leads audio)
    tts_delay: int = MOSHI_DELAY  # aligned, TTS direction: frames the audio lags the text
    asr_delay: int = MOSHI_DELAY  # aligned, ASR direction: frames the text lags the audio
    duplex_text_delay: int = 0  # duplex: frames the model's text lags its audio (< 0: leads)
    listen_delay: int = 3  # duplex with a listen head: frames the user's text lags their audio
    min_words: int = 1  # interleave: words per span, uniform in [min_words, max_words]
    max_words: int = 10
    speech_first: float = 0.5  # interleave: probability that a stream starts with speech
    buckets: int = 8  # length buckets; each batch is drawn from one
    split: str = "train"  # manifest split the samples come from
    text_file: str = ""  # aligned, duplex: lines of text (UTF-8) some training samples are made of
    text_share: float = 0.2  # with text_file: share of training samples that are text alone


class TokenShards:
    """A tokens folder written by `tokenize_corpus`, codes read by memmap.

    items: index rows (tokenize_corpus.py); codes: int16 [R, K] memmap."""

    def __init__(self, folder):
        self.folder = folder = Path(folder)
        if not folder.is_dir():
            raise VoxlmError(f"{folder}: no such tokens folder", TOKENIZE_FIX)
        missing = [n for n in ("tokens.json", "index.jsonl", "codes.npy") if not (folder / n).is_file()]
        if missing:
            raise VoxlmError(f"{folder} has no {', '.join(missing)}: not a finished tokens folder",
                             TOKENIZE_FIX + " (it resumes an unfinished one)")
        try:
            self.header = json.loads((folder / "tokens.json").read_text())
            self.items = [json.loads(line) for line in
                          (folder / "index.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
            self.codes = np.load(folder / "codes.npy", mmap_mode="r")  # [R, K] int16
        except (ValueError, OSError) as error:
            raise VoxlmError(f"{folder}: unreadable token shards ({error})",
                             f"delete its codes.npy and index.jsonl, then {TOKENIZE_FIX}") from None
        if self.header.get("format_version") != FORMAT_VERSION:
            raise VoxlmError(f"{folder}: token format {self.header.get('format_version')}, this "
                             f"voxlm reads {FORMAT_VERSION}", f"tokenize again: {TOKENIZE_FIX}")
        rows = sum(item["frames"] * item["channels"] for item in self.items)
        if self.codes.ndim != 2 or self.codes.shape[0] != rows or self.codes.shape[1] != self.n_q:
            raise VoxlmError(f"{folder}: codes.npy {self.codes.shape} does not match index.jsonl "
                             f"({rows} frames of {self.n_q} codebooks)",
                             f"delete both and {TOKENIZE_FIX}")

    @property
    def frame_rate(self) -> float:
        return float(self.header["frame_rate"])

    @property
    def n_q(self) -> int:  # codebooks stored per frame
        return int(self.header["n_q"])

    @property
    def codebook_size(self) -> int:
        return int(self.header["codebook_size"])

    @property
    def vocab_size(self) -> int:  # the text tokenizer's ids
        return int(self.header["tokenizer"]["vocab_size"])

    def channel(self, item: int, channel: int) -> np.ndarray:
        """Codes of one channel of item `item`: [K, T] int64."""
        row = self.items[item]
        start = row["offset"] + channel * row["frames"]
        return np.asarray(self.codes[start:start + row["frames"]], dtype=np.int64).T

    def words(self, item: int, channel: int) -> list:
        """[{"w", "start", "end", "channel", "ids"}] of one channel, in time order (seconds)."""
        return [w for w in self.items[item]["words"] if w["channel"] == channel]

    def tokenizer(self):
        from .tokenizer import load_tokenizer

        return load_tokenizer(self.folder / "tokenizer.model")


class ShardSet:
    """Several tokens folders read as one (`voxlm lm train --data A --data B`): items in folder
    order, the header, tokenizer and folder of the first. All must come from the same codec
    (hence frame rate and codebooks) and text tokenizer, or training would mix units."""

    def __init__(self, folders):
        self.parts = [TokenShards(f) for f in folders]
        first = self.parts[0]
        for part in self.parts[1:]:
            for key in ("codec", "tokenizer"):
                if part.header[key]["sha256"] != first.header[key]["sha256"]:
                    raise VoxlmError(f"{part.folder} was tokenized with another {key} than "
                                     f"{first.folder}",
                                     "tokenize every corpus with the same --codec and tokenizer "
                                     "(--tokenizer FIRST/tokenizer.model)")
        self.folder, self.header = first.folder, first.header
        self.items = [item for part in self.parts for item in part.items]
        self._where = [(part, i) for part in self.parts for i in range(len(part.items))]

    frame_rate, n_q = TokenShards.frame_rate, TokenShards.n_q
    codebook_size, vocab_size = TokenShards.codebook_size, TokenShards.vocab_size
    tokenizer = TokenShards.tokenizer

    def channel(self, item: int, channel: int) -> np.ndarray:
        part, index = self._where[item]
        return part.channel(index, channel)

    def words(self, item: int, channel: int) -> list:
        part, index = self._where[item]
        return part.words(index, channel)


def open_shards(folders):
    """One tokens folder (a path) or several (a list of paths) -> TokenShards or ShardSet."""
    if isinstance(folders, (list, tuple)):
        return TokenShards(folders[0]) if len(folders) == 1 else ShardSet(folders)
    return TokenShards(folders)


def config_for_shards(base: LMConfig, shards: TokenShards) -> LMConfig:
    """`base` with the data's audio vocabulary (card), at most its codebooks (n_q) and the
    tokenizer's text vocabulary (text_card)."""
    return replace(base, card=shards.codebook_size, n_q=min(base.n_q, shards.n_q),
                   text_card=text_card(shards.vocab_size))


def collate(samples: list, config: LMConfig) -> torch.Tensor:
    """Frames [R, L_i] -> [B, R, max L_i] int64, padded on the right with "not started" ids;
    R = config.n_rows (the S streams, then the listen row with `config.listen`)."""
    length = max(s.shape[1] for s in samples)
    out = np.full((len(samples), config.n_rows, length), config.audio_pad_id, np.int64)
    out[:, 0] = config.text_start_id
    if config.listen:
        out[:, -1] = config.text_start_id
    for row, sample in enumerate(samples):
        out[row, :, :sample.shape[1]] = sample
    return torch.from_numpy(out)


class LMData:
    """Training samples of one split of `shards` in the layout `layout.mode`."""

    def __init__(self, shards: TokenShards, config: LMConfig, layout: LayoutConfig,
                 batch_size: int, seed: int = 0):
        self.shards, self.config, self.layout = shards, config, layout
        self.batch_size, self.seed = batch_size, seed
        self.seq_len = layout.seq_len or config.context
        _check(shards, config, layout, self.seq_len, batch_size)
        items = [i for i, row in enumerate(shards.items) if row["split"] == layout.split]
        if layout.mode == "duplex":
            self.streams = [(i, 1) for i in items if shards.items[i]["channels"] == 2]
        else:
            self.streams = [(i, c) for i in items for c in range(shards.items[i]["channels"])]
        if not self.streams:
            kind = "two-channel dialogue " if layout.mode == "duplex" else ""
            raise VoxlmError(f"{shards.folder} has no {kind}items in split {layout.split!r}",
                             "tokenize a dialogue corpus (voxlm synth dialogues) for duplex"
                             if kind else "tokenize a corpus with training items")
        if layout.mode in TIMED_MODES:  # text placed by word times: items without are no use
            timed = [s for s in self.streams if shards.words(*s)]
            if not timed:
                raise VoxlmError(f"{shards.folder}: no item in split {layout.split!r} has word "
                                 f"timings, and --mode {layout.mode} places text by them",
                                 "train --mode continuation, or tokenize a corpus with word "
                                 "timings (voxlm synth, or voxlm data import without --no-align)")
            if layout.mode != "interleave":  # interleave keeps them as speech-only samples
                self.streams = timed
        extra = 1 + max(config.delays) + {"aligned": max(layout.tts_delay, layout.asr_delay),
                                          "duplex": abs(layout.duplex_text_delay)}.get(layout.mode, 0)
        lengths = self.lengths = np.array([shards.items[i]["frames"] + extra
                                           for i, _ in self.streams])  # [N]
        entries = np.repeat(np.arange(len(self.streams)), -(-lengths // self.seq_len))
        order = np.argsort(np.minimum(lengths[entries], self.seq_len), kind="stable")
        self.buckets = [b for b in np.array_split(entries[order], max(1, layout.buckets)) if len(b)]
        self.batches_per_epoch = sum(-(-len(b) // batch_size) for b in self.buckets)
        self._plan = (-1, [])
        self.text_lines = (read_text_lines(layout.text_file, shards.tokenizer())
                           if layout.text_file and layout.split == "train" else [])

    def epoch_plan(self, epoch: int) -> list:
        """The epoch's batches, each [batch_size] stream indices from one length bucket."""
        if self._plan[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0xB])
            batches = []
            for bucket in self.buckets:
                n = -(-len(bucket) // self.batch_size)
                perm = np.resize(rng.permutation(bucket), n * self.batch_size)  # wraps to fill
                batches += list(perm.reshape(n, self.batch_size))
            self._plan = (epoch, [batches[k] for k in rng.permutation(len(batches))])
        return self._plan[1]

    def global_batch(self, step: int) -> np.ndarray:
        """[batch_size] stream indices of the samples of `step`, on every process."""
        epoch, index = divmod(step, self.batches_per_epoch)
        return self.epoch_plan(epoch)[index]

    def layout_frames(self, stream: int, rng: np.random.Generator) -> np.ndarray:
        """The whole layout of one stream -> frames [S, L] int64; random choices from `rng`."""
        c, layout, rate = self.config, self.layout, self.shards.frame_rate
        item, channel = self.streams[stream]
        codes = self.shards.channel(item, channel)  # [K, T]
        words = self.shards.words(item, channel)
        tokens = [w["ids"] for w in words]
        mode = layout.mode
        if mode == "continuation" or (mode == "interleave" and not words):
            return continuation(codes, c)
        if mode == "interleave":
            options = InterleaveOptions(layout.min_words, layout.max_words, layout.speech_first)
            modalities = sample_modalities(len(words), rng, options)
            return interleave(interleave_segments(codes, words, tokens, modalities, c, rate), c)
        if mode == "aligned":
            tts = rng.random() < layout.tts_share
            delay = -layout.tts_delay if tts else layout.asr_delay
            return aligned(codes, words, tokens, c, delay, rate)
        user = self.shards.channel(item, 0)
        frames = duplex(user, codes, words, tokens, c, layout.duplex_text_delay, rate)
        if not c.listen:
            return frames
        user_words = self.shards.words(item, 0)
        heard = listen_row(user_words, [w["ids"] for w in user_words], c, frames.shape[1],
                           layout.listen_delay, layout.duplex_text_delay, rate)
        return np.concatenate([frames, heard[None]])  # [S + 1, L]

    def text_frames(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """A text-alone sample of `length` frames: random lines of text_file, one after another,
        paced like the dialogues' speech -> frames [R, length] (`streams.text_only`)."""
        rate, words, tokens = self.shards.frame_rate, [], []
        at = float(rng.uniform(0, LINE_GAP_S[1]))  # seconds: where the next word starts
        while at < length / rate:
            for ids in self.text_lines[int(rng.integers(len(self.text_lines)))]:
                words.append({"start": at, "end": at})
                tokens.append(ids)
                at += float(rng.uniform(*WORD_STEP_S))
            at += float(rng.uniform(*LINE_GAP_S))
        keep = [i for i, w in enumerate(words) if w["start"] < (length - 1) / rate]
        frames = text_only([words[i] for i in keep], [tokens[i] for i in keep], self.config,
                           length, rate)
        if self.config.listen:  # the listen head hears no user: its row is not started
            frames = np.concatenate([frames, np.full((1, length), self.config.text_start_id)])
        return frames

    def sample(self, step: int, index: int) -> np.ndarray:
        """Sample `index` of the global batch of `step`: frames [R, <= seq_len] (R = config.n_rows)."""
        rng = np.random.default_rng([self.seed, step, index, 0x5])
        stream = int(self.global_batch(step)[index])
        if self.text_lines:  # own draws: the spoken samples stay those of a run without text
            text_rng = np.random.default_rng([self.seed, step, index, 0x7])
            if text_rng.random() < self.layout.text_share:  # as long as the one it replaces
                return self.text_frames(int(min(self.lengths[stream], self.seq_len)), text_rng)
        frames = self.layout_frames(stream, rng)
        if frames.shape[1] > self.seq_len:
            start = int(rng.integers(0, frames.shape[1] - self.seq_len + 1))
            frames = frames[:, start:start + self.seq_len]
        return frames

    def batch(self, step: int, rank: int = 0, world: int = 1, accum: int = 1) -> list:
        """This process's share of the global batch of `step`: `accum` microbatches, each
        [batch_size / world / accum, R, T] int64 (T <= seq_len, the longest sample's)."""
        if self.batch_size % (world * accum):
            raise VoxlmError(f"batch size {self.batch_size} does not split over {world} "
                             f"processes x {accum} microbatches",
                             "choose a batch size divisible by processes x accum")
        per_rank = self.batch_size // world
        samples = [self.sample(step, i) for i in range(rank * per_rank, (rank + 1) * per_rank)]
        size = per_rank // accum
        return [collate(samples[k:k + size], self.config) for k in range(0, per_rank, size)]


def read_text_lines(path, tokenizer) -> list:
    """The lines of a text file -> [[ids of each word]] per line, in the spoken form and word
    split the corpora use (`line_word_ids`)."""
    from ..synth.text import text_file_lines

    try:
        lines = text_file_lines(path)
    except VoxlmError as error:
        raise VoxlmError(f"--text {error}") from None
    return [line_word_ids(line, tokenizer) for line in lines]


def line_word_ids(line: str, tokenizer) -> list:
    """One line of spoken-form text -> [ids of each word], words split as the corpora's are and
    each tokenized after a space, as mid-stream words are."""
    from ..synth.engines import text_words

    return [list(tokenizer.encode(" " + word)) for word, _, _ in text_words(line)]


def check_text_layout(layout: LayoutConfig):
    """--text and --text-share, before any data loads."""
    if layout.text_file and layout.mode not in ("aligned", "duplex"):
        raise VoxlmError(f"--text mixes text into a model's text stream, and --mode {layout.mode} "
                         "has none beside speech", "use it with --mode aligned or duplex")
    if not 0.0 <= layout.text_share < 1.0:
        raise VoxlmError(f"--text-share {layout.text_share}",
                         "pass the share of samples that are text alone, from 0 up to 1, e.g. 0.2")
    if layout.text_file and not Path(layout.text_file).is_file():
        raise VoxlmError(f"--text {layout.text_file}: no such text file",
                         "pass a UTF-8 file with one utterance per line (e.g. from `voxlm synth "
                         "answers`)")


def _check(shards: TokenShards, config: LMConfig, layout: LayoutConfig, seq_len: int,
           batch_size: int):
    if layout.mode not in MODES:
        raise VoxlmError(f"unknown layout mode {layout.mode!r}", f"choose one of {', '.join(MODES)}")
    if layout.mode == "duplex" and not config.user_audio:
        raise VoxlmError("the duplex layout needs the user audio stream",
                         "use an LM config with user_audio=True (the presets have it)")
    if config.listen and layout.mode != "duplex":
        raise VoxlmError(f"a listen head learns the user's words, and --mode {layout.mode} has no "
                         "user", "train --mode duplex, or drop --listen-weight")
    if layout.listen_delay < 0:
        raise VoxlmError(f"--listen-delay {layout.listen_delay}", "pass 0 frames or more, e.g. 3")
    check_text_layout(layout)
    if seq_len < 2:
        raise VoxlmError(f"sequence length {seq_len} frames is too short", "use 2 or more")
    if batch_size < 1:
        raise VoxlmError(f"batch size {batch_size}", "use 1 or more")
    if not 0.0 <= layout.tts_share <= 1.0 or min(layout.tts_delay, layout.asr_delay) < 0:
        raise VoxlmError(f"tts_share {layout.tts_share}, tts_delay {layout.tts_delay}, "
                         f"asr_delay {layout.asr_delay}", "need a share in 0..1 and delays >= 0")
    if not 1 <= layout.min_words <= layout.max_words:
        raise VoxlmError(f"interleave spans of {layout.min_words}..{layout.max_words} words",
                         "need 1 <= min_words <= max_words")
    problems = []
    if config.card < shards.codebook_size:
        problems.append(f"card {config.card} < the codec's {shards.codebook_size} codes")
    if config.n_q > shards.n_q:
        problems.append(f"n_q {config.n_q} > the {shards.n_q} codebooks tokenized")
    if config.text_card < text_card(shards.vocab_size):
        problems.append(f"text_card {config.text_card} < {text_card(shards.vocab_size)} "
                        f"(the tokenizer's {shards.vocab_size} ids + reserved ones)")
    if problems:
        raise VoxlmError(f"the LM config does not fit {shards.folder}: {'; '.join(problems)}",
                         "build it with config_for_shards(base, shards)")
