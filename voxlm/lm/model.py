"""The speech-text LM: a temporal transformer over frames and a depth transformer within a frame.

Moshi's RQ-Transformer, sized for a laptop. Streams, one row each of `tokens` [B, S, T]:

    row 0               model text (inner monologue), ids 0..text_card-1, TEXT_START = text_card
    rows 1..n_q         model audio codebooks 1..n_q, ids 0..card-1, AUDIO_PAD = card
    rows n_q+1..2 n_q   user audio codebooks 1..n_q (only with `user_audio`)
    row 2 n_q+1         the user's words (only with `listen`, in training): a target, not an input

Acoustic codebooks 2..n_q are stored delayed by `acoustic_delay` frames (`delays.delay_codes`);
the model does not know about delays, it just models the rows as laid out.

Per frame t, the temporal input is the sum of one embedding per stream (each codebook its own
table) and the temporal transformer (causal, KV cache) gives h_t [B, T, dim]. The depth
transformer then predicts the model's tokens of frame t+1, one depth position at a time:

    position 0:        proj(h_t)                          -> text head  -> text[t+1]
    position k>=1:     proj(h_t) + emb_k(token k-1 of t+1) -> audio head k -> codebook k[t+1]

with token 0 the text and token k the k-th model codebook; teacher forced in training, sampled
one after another in `generate.LMGen`. With `listen`, a linear head on h_t also predicts the
user's text at t+1 (the user's words, time-aligned and lagging their audio: `streams.listen_row`),
an auxiliary ASR loss that makes the temporal transformer write down what it hears; it is never
fed back, so generation does not need it. The depth transformer is causal over positions and has
no memory across frames.

Shift convention: `forward(tokens)` gives logits at every frame t = 0..T-1 predicting the model
tokens at t+1; the last frame's audio logits are conditioned on "not started" ids and have no
target. `lm_loss` compares logits[..., :T-1] with tokens[..., 1:] and ignores TEXT_START and
AUDIO_PAD targets.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.streaming import StreamingModule
from ..modules.transformer import BlockConfig, Transformer

# Text ids reserved at the start of the text vocabulary (a tokenizer's own ids follow them).
TEXT_PAD_ID = 0  # no text at this frame (between words, silence): predicted like any token
TEXT_EOW_ID = 1  # end of padding: a word starts at the next frame (Moshi's EPAD)
# "Not started" ids sit one past each vocabulary, so embeddings have card + 1 rows and heads
# card outputs: config.text_start_id = text_card, config.audio_pad_id = card. They fill the
# frames before a stream starts and the acoustic delay, and are ignored in the loss.


@dataclass
class LMConfig:
    dim: int = 512  # temporal transformer width
    layers: int = 8
    heads: int = 8
    context: int = 375  # frames attended by the temporal transformer (30 s at 12.5 Hz)
    ff_mult: int = 3  # SwiGLU hidden = ff_mult * width, temporal and depth
    depth_dim: int = 256  # depth transformer width
    depth_layers: int = 2
    depth_heads: int = 4
    n_q: int = 8  # audio codebooks modelled per audio stream (<= the codec's 12)
    card: int = 1024  # audio codebook size
    text_card: int = 32000  # text vocabulary size, reserved ids included
    user_audio: bool = True  # a user audio input stream (full duplex)
    acoustic_delay: int = 1  # frames by which codebooks 2..n_q lag codebook 1 in the layout
    # temporal layers laid out like a pretrained text LM's (`warmstart.py`); defaults: voxlm's
    temporal_block: BlockConfig = field(default_factory=BlockConfig)
    text_scale: float = 1.0  # the text embedding is multiplied by this (Gemma: sqrt(dim))
    dropout: float = 0.0  # temporal input and residual-branch dropout in training (nanoGPT's)
    listen: bool = False  # a listen head: h_t predicts the user's text at t+1 (duplex training)
    # user audio codebooks the temporal transformer reads (0: all n_q). The rest enter as "not
    # started": the words are in codebook 1, the voice in the others, and a model that cannot
    # see the user's voice cannot learn its training voices instead of what they say
    user_codebooks: int = 0

    def __post_init__(self):
        if isinstance(self.temporal_block, dict):  # as stored in a checkpoint's JSON
            self.temporal_block = BlockConfig(**self.temporal_block)

    @property
    def n_streams(self) -> int:  # S, rows of `tokens`
        return 1 + self.n_q * (2 if self.user_audio else 1)

    @property
    def n_rows(self) -> int:  # rows of training frames: the S streams, then the listen target
        return self.n_streams + int(self.listen)

    @property
    def text_start_id(self) -> int:  # "not started" text id
        return self.text_card

    @property
    def audio_pad_id(self) -> int:  # "not started" / delay padding audio id
        return self.card

    @property
    def delays(self) -> list:
        """Frame delay of each of the S rows: text 0, codebook 1 0, codebooks 2..n_q d."""
        audio = [0] + [self.acoustic_delay] * (self.n_q - 1)
        return [0] + audio * (2 if self.user_audio else 1)


def lm_config(name: str) -> LMConfig:
    """Named presets: `tiny` for tests, `small` for the shipped dialogue model, `base` for the
    step-latency goal: Moshi's LMModel at the
    same sizes (dim 512, 8 layers, depformer 256 x 2, 8 + 8 codebooks, 32000 text ids) takes
    62 ms per frame step on one thread here, base 23 ms with int8 weights
    (benchmarks/lm_step_latency.py)."""
    if name == "tiny":
        return LMConfig(dim=32, layers=2, heads=2, context=16, ff_mult=2, depth_dim=32,
                        depth_layers=2, depth_heads=2, n_q=3, card=64, text_card=40)
    if name == "small":  # the shipped dialogue model: fits the 40 MB of assets in int8
        return LMConfig(dim=384, layers=6, heads=6)
    if name == "base":
        return LMConfig()
    raise ValueError(f"unknown lm config {name!r}; choose tiny, small or base")


class LMOutput(NamedTuple):
    text_logits: torch.Tensor  # [B, T, text_card], frame t predicts text at t + 1
    audio_logits: torch.Tensor  # [B, n_q, T, card], frame t predicts codebooks at t + 1
    listen_logits: torch.Tensor | None = None  # [B, T, text_card]: the user's text at t + 1


class LM(StreamingModule):
    """tokens [B, S, T] (or [B, S + 1, T] with `listen`: the last row a target) -> LMOutput. Streams with `with lm.streaming(batch):` (temporal KV
    cache); `generate.LMGen` runs one frame at a time."""

    def __init__(self, config: LMConfig):
        super().__init__()
        c = self.config = config
        if not 1 <= c.n_q <= 12:
            raise ValueError(f"n_q must be 1..12, got {c.n_q}")
        if c.listen and not c.user_audio:
            raise ValueError("listen needs a user audio stream to listen to (user_audio=True)")
        if not 0 <= c.user_codebooks <= c.n_q:
            raise ValueError(f"user_codebooks must be 0..{c.n_q}, got {c.user_codebooks}")
        n_audio = c.n_streams - 1
        # temporal input: one table per stream; audio tables stacked so one embedding_bag sums
        # them all. Each scaled so that the sum of S embeddings has unit variance.
        self.text_emb = nn.Embedding(c.text_card + 1, c.dim)
        self.audio_emb = nn.Parameter(torch.randn(n_audio, c.card + 1, c.dim))  # [A, card+1, D]
        for weight in (self.text_emb.weight, self.audio_emb):
            nn.init.normal_(weight, std=1 / math.sqrt(c.n_streams))
        self.register_buffer("audio_offsets", torch.arange(n_audio) * (c.card + 1),
                             persistent=False)  # [A]: row of each stream's table in the stack
        self.input_dropout = nn.Dropout(c.dropout)
        self.temporal = Transformer(c.dim, c.layers, c.heads, c.context, c.ff_mult,
                                    options=c.temporal_block, dropout=c.dropout)
        # depth: shared input projection, per-position input embeddings and output heads
        self.depth_in = nn.Linear(c.dim, c.depth_dim, bias=False)
        self.depth_text_emb = nn.Embedding(c.text_card + 1, c.depth_dim)  # input of position 1
        self.depth_audio_emb = nn.Parameter(  # input of positions 2..n_q: codebooks 1..n_q-1
            torch.randn(c.n_q - 1, c.card + 1, c.depth_dim))
        self.depth = Transformer(c.depth_dim, c.depth_layers, c.depth_heads, 1 + c.n_q, c.ff_mult,
                                 rope=False)  # positions: one input table each, as in Moshi
        self.text_head = nn.Linear(c.depth_dim, c.text_card, bias=False)  # position 0
        self.audio_heads = nn.Parameter(  # positions 1..n_q: [n_q, card, depth_dim]
            torch.empty(c.n_q, c.card, c.depth_dim).uniform_(-1, 1) / math.sqrt(c.depth_dim))
        self.register_buffer("depth_offsets", torch.arange(c.n_q - 1) * (c.card + 1),
                             persistent=False)
        if c.listen:
            self.listen_head = nn.Linear(c.dim, c.text_card, bias=False)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, S, T] -> summed stream embeddings [B, T, dim] (a listen row is left out)."""
        c = self.config
        tokens = tokens[:, :c.n_streams]
        if c.user_audio and 0 < c.user_codebooks < c.n_q:  # the user's voice codebooks unread
            tokens = tokens.clone()
            tokens[:, 1 + c.n_q + c.user_codebooks:] = c.audio_pad_id
        batch, streams, length = tokens.shape
        audio = (tokens[:, 1:] + self.audio_offsets[:, None]).transpose(1, 2)  # [B, T, A]
        table = self.audio_emb.view(-1, self.config.dim)  # [A * (card+1), D]
        x = F.embedding_bag(audio.reshape(-1, streams - 1), table, mode="sum")  # [B*T, D]
        text = self.text_emb(tokens[:, 0])  # [B, T, D]
        if self.config.text_scale != 1.0:
            text = text * self.config.text_scale
        return x.view(batch, length, -1) + text

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, S, T] -> h [B, T, dim]; streams through the KV cache when streaming."""
        self._check(tokens)
        return self.temporal(self.input_dropout(self.embed(tokens)))

    def forward(self, tokens: torch.Tensor) -> LMOutput:
        """Teacher-forced logits for the model tokens of the next frame. tokens [B, S, T]."""
        c = self.config
        h = self.hidden(tokens)  # [B, T, D]
        batch, length, _ = h.shape
        # depth inputs of frame t are the model tokens of frame t+1 (start ids after the end)
        start = torch.tensor([c.text_start_id] + [c.audio_pad_id] * (c.n_q - 1), device=h.device)
        following = torch.cat([tokens[:, :c.n_q, 1:],
                               start.view(1, -1, 1).expand(batch, -1, 1)], dim=2)  # [B, n_q, T]
        x = [h.new_zeros(batch, length, c.depth_dim), self.depth_text_emb(following[:, 0])]
        if c.n_q > 1:
            audio = following[:, 1:] + self.depth_offsets[:, None]  # [B, n_q-1, T]
            table = self.depth_audio_emb.view(-1, c.depth_dim)
            x += list(F.embedding(audio, table).unbind(1))  # n_q-1 x [B, T, depth_dim]
        x = self.depth_in(h)[:, :, None] + torch.stack(x, dim=2)  # [B, T, 1+n_q, depth_dim]
        with self._depth_offline():
            y = self.depth(x.view(batch * length, 1 + c.n_q, -1)).view(batch, length, 1 + c.n_q, -1)
        text_logits = self.text_head(y[:, :, 0])  # [B, T, text_card]
        audio_logits = torch.einsum("btkd,kcd->bktc", y[:, :, 1:], self.audio_heads)
        listen_logits = self.listen_head(h) if c.listen else None  # [B, T, text_card]
        return LMOutput(text_logits, audio_logits, listen_logits)

    def _check(self, tokens: torch.Tensor):
        rows = {self.config.n_streams, self.config.n_rows}
        if tokens.dim() != 3 or tokens.shape[1] not in rows:
            raise ValueError(f"tokens must be [B, {self.config.n_streams}, T] "
                             f"(text, {self.config.n_q} model codebooks"
                             f"{', user codebooks' if self.config.user_audio else ''}), "
                             f"got {tuple(tokens.shape)}")

    @contextmanager
    def _depth_offline(self):
        """The depth transformer runs whole frames in `forward`, even inside `streaming`."""
        modules = self.depth._streaming_modules()
        flags = [m.is_streaming for m in modules]
        for m in modules:
            m._streaming = False
        try:
            yield
        finally:
            for m, flag in zip(modules, flags):
                m._streaming = flag


def lm_loss(output: LMOutput, tokens: torch.Tensor) -> dict:
    """Cross-entropy of the logits at frames 0..T-2 against the model tokens at 1..T-1.

    -> dict(text=scalar, audio=mean over codebooks, per_codebook=[n_q scalars], total=text +
    audio). Targets equal to the "not started" ids (text_card, card) are ignored."""
    text_logits, audio_logits = output[:2]
    text_card, (n_q, card) = text_logits.shape[-1], (audio_logits.shape[1], audio_logits.shape[-1])
    text = F.cross_entropy(text_logits[:, :-1].reshape(-1, text_card),
                           tokens[:, 0, 1:].reshape(-1), ignore_index=text_card)
    targets = tokens[:, 1:1 + n_q, 1:]  # [B, n_q, T-1]
    losses = F.cross_entropy(audio_logits[:, :, :-1].reshape(-1, card),
                             targets.reshape(-1).clamp(max=card - 1), reduction="none")
    valid = (targets != card).reshape(-1).float()
    per_codebook = ((losses * valid).view(-1, n_q, targets.shape[-1]).sum((0, 2))
                    / valid.view(-1, n_q, targets.shape[-1]).sum((0, 2)).clamp(min=1))
    if torch.isnan(text):  # every text target ignored
        text = text_logits.sum() * 0
    audio = per_codebook.mean()
    return {"text": text, "audio": audio, "per_codebook": list(per_codebook.unbind()),
            "total": text + audio}


def read_audio_tables(config: LMConfig, mode: str) -> int:
    """How many of the LM's audio input tables (its codebooks', then the user's) a model in
    layout `mode` reads at more than their "not started" row: a non-duplex layout never fills
    the user's rows, and a duplex model with `user_codebooks` k reads only the user's first k."""
    n_audio = config.n_streams - 1
    if config.user_audio and mode != "duplex":
        return config.n_q
    if config.user_audio and 0 < config.user_codebooks < config.n_q:
        return config.n_q + config.user_codebooks
    return n_audio


UNREAD_SUFFIX = "_unread"  # audio_emb_unread [U, D]: the "not started" rows of unread tables


def save_lm(path, lm: LM, dtype: torch.dtype | None = None, int8: bool = False, extra=None,
            int4: bool = False, keep_int8: tuple = (), read_tables: int | None = None):
    """Write an LM model file (safetensors + its LMConfig); `keep_int8`: name prefixes of
    weights that stay int8 under `int4`. With `read_tables` (`read_audio_tables`), the audio
    input tables after the first `read_tables` are stored as their "not started" row alone
    (all the model ever reads of them): the same outputs from a smaller file."""
    from ..checkpoint import save_model

    state = dict(lm.state_dict())
    if read_tables is not None and read_tables < lm.audio_emb.shape[0]:
        table = state["audio_emb"]  # [A, card+1, D]
        state["audio_emb"] = table[:read_tables]
        state["audio_emb" + UNREAD_SUFFIX] = table[read_tables:, lm.config.audio_pad_id]  # [U, D]
    return save_model(path, "lm", lm.config, state, dtype=dtype, extra=extra, int8=int8,
                      int4=int4, keep_int8=keep_int8)


def load_lm(path, device: str = "cpu") -> LM:
    """An LM rebuilt from the config stored in its model file, in eval mode."""
    from pathlib import Path

    from ..checkpoint import load_into, load_model
    from ..errors import VoxlmError

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, config, _ = load_model(path, "lm")
    try:
        lm = LM(LMConfig(**config))
    except (TypeError, ValueError) as error:
        raise VoxlmError(f"{path} has an lm config this voxlm does not know ({error})",
                         "use the voxlm version that trained it") from None
    unread = tensors.pop("audio_emb" + UNREAD_SUFFIX, None)  # [U, D]
    if unread is not None and "audio_emb" in tensors:  # each unread table: its one row, everywhere
        rows = lm.config.card + 1
        tensors["audio_emb"] = torch.cat([tensors["audio_emb"],
                                          unread[:, None].expand(-1, rows, -1)])
    load_into(lm, tensors, path)
    return lm.to(device).eval()
