"""LM training task for the shared loop (`voxlm.train.Trainer`).

    voxlm lm train --data data/tokens --out runs/lm --mode aligned --config base
    torchrun --nproc_per_node 2 -m voxlm lm train ...                      # DDP, the same batches
    torchrun --nproc_per_node 8 -m voxlm lm train ... --fsdp               # FSDP2, the same batches

AdamW with weight decay on matrices only (embeddings, projections, heads; not norms), gradient
clipping, the shared cosine schedule. The loss is `model.lm_loss`'s: text cross-entropy plus the
mean over codebooks of each codebook's cross-entropy, each averaged over the real targets of the
whole global batch (not per process or microbatch), so any split over processes and
microbatches gives the gradient of one process with the whole batch. Logged per step: loss,
text_loss, audio_loss, semantic_loss (codebook 1), grad_norm, frames_per_s and tokens_per_s
(frames x streams of the global batch, padding included, over the step's wall time with batch
building). bf16 autocast comes from the Trainer (on by default on GPU). With `--fsdp` the
Trainer calls `shard` instead of `wrap`: FSDP2 with each temporal and depth transformer block
its own unit (`voxlm/sharding.py`).

With `--valid-every N` (`validate`, called by the Trainer every N steps and at the last) every
process computes the held-out loss of the training layout on split valid (the first
`--valid-limit` streams, the same windows every time: `eval.lm.layout_losses`, in eval mode
under the training autocast), process 0 logs it as valid_loss, valid_text_loss,
valid_audio_loss and valid_semantic_loss, and a better valid_loss than before writes
RUN/best.safetensors.

RUN/model.safetensors  the LM (save_lm; extra: mode, tokenizer, codec sha256 and path, frame
                       rate, the layout's tts/asr/duplex text delays that generation reads back)
RUN/best.safetensors   the LM at the step of the lowest valid_loss (--valid-every; same format)
RUN/tokenizer.model    the text tokenizer of its text stream
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..checkpoint import save_model
from ..errors import VoxlmError
from ..train import no_sync, unwrap
from .data import LayoutConfig, LMData, check_text_layout, config_for_shards, open_shards
from .model import LM, LMConfig, LMOutput


@dataclass
class LMTrainConfig:
    batch_size: int = 16  # global batch (sequences), split over processes and microbatches
    accum: int = 1  # microbatches per step
    lr: float = 3e-4  # peak learning rate (the Trainer's schedule scales it)
    weight_decay: float = 0.1  # on matrices only
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    text_weight: float = 1.0  # weight of the text loss against the audio loss
    semantic_weight: float = 1.0  # weight of codebook 1 against each other codebook (Moshi: 100)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    warm_start: str = ""  # "": random init; "gguf": the shipped Gemma 3 270M; else a GGUF/HF path
    warm_weights: bool = True  # False: the warm-start model's shape, weights drawn fresh (the
    #                            random-init baseline of a warm-start comparison)
    init: str = ""  # a run folder or LM file to start from (fine-tuning); "": fresh weights
    # --init from tokens of another codec (one whose codes differ, e.g. a new codebook 1): the
    # audio embeddings and heads start from the old codes' and learn the new ones
    init_other_codec: bool = False
    valid_every: int = 0  # held-out loss every N steps and at the last (0: none)
    valid_limit: int = 50  # streams of split valid it is computed on
    dropout: float = 0.0  # the LM's dropout in training (LMConfig.dropout; replaces --init's)
    listen_weight: float = 0.0  # > 0: a listen head learns the user's words (duplex), this weight
    user_codebooks: int = -1  # LMConfig.user_codebooks (duplex; with --init: replaces its); -1: keep

    def __post_init__(self):
        """Bad values fail here, named by their `voxlm lm train` flags, before any data loads
        (the layout's own values are checked with the data: `data._check`)."""
        for flag, value, ok, fix in (
                ("--lr", self.lr, 0 < self.lr < 1, "pass a learning rate such as 3e-4"),
                ("--weight-decay", self.weight_decay, 0 <= self.weight_decay < 10,
                 "pass 0 or more, e.g. 0.1"),
                ("--grad-clip", self.grad_clip, self.grad_clip > 0, "pass a norm above 0, e.g. 1.0"),
                ("--accum", self.accum, self.accum >= 1, "pass 1 or more microbatches"),
                ("--text-weight", self.text_weight, 0 <= self.text_weight < 1000,
                 "pass 0 or more, e.g. 1"),
                ("--semantic-weight", self.semantic_weight, 0 < self.semantic_weight < 1000,
                 "pass a weight above 0, e.g. 1 (Moshi: 100)"),
                ("--valid-every", self.valid_every, self.valid_every >= 0,
                 "pass a number of steps, or 0 for no validation"),
                ("--valid-limit", self.valid_limit, self.valid_limit >= 1,
                 "pass 1 or more streams, e.g. 50"),
                ("--dropout", self.dropout, 0 <= self.dropout < 1,
                 "pass a probability from 0 up to 1, e.g. 0.1"),
                ("--listen-weight", self.listen_weight, 0 <= self.listen_weight < 1000,
                 "pass 0 (no listen head) or more, e.g. 1"),
                ("--user-codebooks", self.user_codebooks, -1 <= self.user_codebooks <= 12,
                 "pass the user codebooks the model reads, 1 to its codebooks (0: all)")):
            if not ok:
                raise VoxlmError(f"{flag} {value}", fix)
        check_text_layout(self.layout)
        if self.init and self.warm_start:
            raise VoxlmError("--init and --warm-start both set where the weights come from",
                             "pass one of them")
        if self.user_codebooks > 0 and self.layout.mode != "duplex":
            raise VoxlmError(f"--user-codebooks {self.user_codebooks} with --mode {self.layout.mode}",
                             "it sets what a duplex model hears of the user: use --mode duplex")
        if self.init_other_codec and not self.init:
            raise VoxlmError("--init-other-codec says the --init model's codec differs, and no "
                             "--init was given", "add --init RUN, or drop --init-other-codec")
        if not self.warm_weights and not self.warm_start:
            raise VoxlmError("--shape-only takes the shape of a --warm-start model, and none was "
                             "given", "add --warm-start gguf (or a model path), or drop --shape-only")


def stream_losses(output: LMOutput, tokens: torch.Tensor) -> tuple:
    """Summed cross-entropy and target counts per model stream: -> (sums [1 + n_q (+ 1)] float32,
    counts [1 + n_q (+ 1)] float64), text first, then codebooks 1..n_q, then the listen head's
    when the output has one and tokens [B, S + 1, T] carry its row. Targets equal to the "not
    started" ids are left out, as in `lm_loss`. tokens [B, S, T]."""
    text_logits, audio_logits, listen_logits = output
    text_card, n_q, card = text_logits.shape[-1], audio_logits.shape[1], audio_logits.shape[-1]
    text = _text_loss_sum(text_logits, tokens[:, 0], text_card)
    targets = tokens[:, 1:1 + n_q, 1:]  # [B, n_q, T-1]
    losses = F.cross_entropy(audio_logits[:, :, :-1].reshape(-1, card).float(),
                             targets.reshape(-1).clamp(max=card - 1), reduction="none")
    valid = (targets != card).float()  # [B, n_q, T-1]
    audio = (losses.view_as(valid) * valid).sum((0, 2))  # [n_q]
    sums = [text[None], audio]
    if listen_logits is not None and has_listen_row(tokens, n_q):
        sums.append(_text_loss_sum(listen_logits, tokens[:, -1], text_card)[None])
    return torch.cat(sums), target_counts(tokens, text_card, n_q, card)


def _text_loss_sum(logits: torch.Tensor, row: torch.Tensor, text_card: int) -> torch.Tensor:
    """Summed cross-entropy of logits [B, T, V] at frames 0..T-2 against a text row [B, T] at
    1..T-1, "not started" targets left out."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, text_card).float(), row[:, 1:].reshape(-1),
                           ignore_index=text_card, reduction="sum")


def has_listen_row(tokens: torch.Tensor, n_q: int) -> bool:
    """Whether tokens [B, R, T] carry a listen row after text, model and user codebooks."""
    return tokens.shape[1] == 2 + 2 * n_q


def target_counts(tokens: torch.Tensor, text_card: int, n_q: int, card: int) -> torch.Tensor:
    """Real targets per model stream: [1 + n_q (+ 1)] float64, text first, the listen row last
    when tokens [B, R, T] have one."""
    counts = [(tokens[:, 0, 1:] != text_card).sum()[None], (tokens[:, 1:1 + n_q, 1:] != card).sum((0, 2))]
    if has_listen_row(tokens, n_q):
        counts.append((tokens[:, -1, 1:] != text_card).sum()[None])
    return torch.cat(counts).double()


def _check_user_codebooks(config: LMConfig):
    if config.user_codebooks > config.n_q:
        raise VoxlmError(f"--user-codebooks {config.user_codebooks}, and the model reads "
                         f"{config.n_q} codebooks per stream", f"pass 1 to {config.n_q} (0: all)")


class LMTask:
    name = "lm"

    def __init__(self, tokens_dir, model_config: LMConfig, config: LMTrainConfig,
                 progress: bool = True):
        self.shards = open_shards(tokens_dir)  # errors on a bad folder before any process starts
        if config.valid_every and not any(r["split"] == "valid" for r in self.shards.items):
            raise VoxlmError(f"tokens in {self.shards.folder} have no items in split valid",
                             "tokenize a corpus with held-out voices, or drop --valid-every")
        self.model_config = replace(config_for_shards(model_config, self.shards),
                                    dropout=config.dropout, listen=config.listen_weight > 0)
        if config.user_codebooks >= 0:
            self.model_config = replace(self.model_config, user_codebooks=config.user_codebooks)
        if not config.init:  # else the --init model's codebooks count (`_init_lm`)
            _check_user_codebooks(self.model_config)
        self.config, self.progress = config, progress

    # ---- the interface the Trainer uses ----
    def setup(self, dist_info, train_config):
        """Called by the Trainer after seeding, so initial weights follow the seed."""
        self.dist, self.train_config = dist_info, train_config
        c = self.config
        if c.init:
            lm = self._init_lm()
        else:
            lm = self._warm_lm() if c.warm_start else LM(self.model_config)
        self.data = LMData(self.shards, self.model_config, c.layout, c.batch_size,
                           seed=train_config.seed)
        valid = replace(c.layout, split="valid", text_file="")  # the spoken corpus only
        self.valid_data = (LMData(self.shards, self.model_config, valid, batch_size=1)
                           if c.valid_every else None)
        if c.batch_size % (dist_info.world * c.accum):
            raise VoxlmError(f"batch size {c.batch_size} does not split over {dist_info.world} "
                             f"processes x {c.accum} microbatches",
                             "choose a batch size divisible by processes x accum")
        # sharding moves the weights to the device one block at a time
        sharded = train_config.fsdp and dist_info.world > 1
        self.lm = lm if sharded else lm.to(dist_info.device)
        self.modules = {"lm": self.lm}
        self.optimizers = {"lm": self._optimizer()}
        self._began = None

    def _optimizer(self) -> torch.optim.AdamW:
        c = self.config
        decay = [p for p in self.lm.parameters() if p.dim() >= 2]
        plain = [p for p in self.lm.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                  {"params": plain, "weight_decay": 0.0}],
                                 lr=c.lr, betas=tuple(c.betas))

    def _init_lm(self) -> LM:
        """The LM of --init (fine-tuning): its config and weights; its tokenizer and codec must be
        the ones the tokens were made with, or its embeddings would mean other things."""
        from .speech import load_speech_lm
        from .tokenize_corpus import recorded_code_ids

        source = load_speech_lm(self.config.init)
        header, extra = self.shards.header, source.extra
        their_codes = recorded_code_ids(extra.get("codec_sha256"), extra.get("codec_codes_of", []))
        our_codes = recorded_code_ids(header["codec"]["sha256"], header["codec"].get("codes_of", []))
        for what, same in (
                ("tokenizer", (extra.get("tokenizer") or {}).get("sha256")
                 == header["tokenizer"]["sha256"]),
                ("codec", bool(their_codes & our_codes) or self.config.init_other_codec)):
            if not same:
                raise VoxlmError(f"--init {self.config.init} was trained with another {what} than "
                                 f"the tokens in {self.shards.folder}",
                                 f"tokenize with its {what} (`voxlm lm tokenize --tokenizer "
                                 f"RUN/tokenizer.model`, the same --codec)"
                                 + ("; or pass --init-other-codec to learn the new codec's codes"
                                    if what == "codec" else ""))
        listen = source.lm.config.listen or self.config.listen_weight > 0
        config = replace(source.lm.config, dropout=self.config.dropout, listen=listen)
        if self.config.user_codebooks >= 0:
            config = replace(config, user_codebooks=self.config.user_codebooks)
        _check_user_codebooks(config)
        if config.n_q > self.shards.n_q:
            raise VoxlmError(f"--init {self.config.init} predicts {config.n_q} codebooks, the tokens "
                             f"have {self.shards.n_q}", "tokenize with its codec")
        self.model_config = config
        lm = LM(config)
        weights = {k: v.float() for k, v in source.lm.state_dict().items()}
        if listen and not source.lm.config.listen:  # a new listen head on the source's weights
            weights.update({k: v for k, v in lm.state_dict().items() if k.startswith("listen_")})
        lm.load_state_dict(weights)
        if (config.user_audio and self.config.layout.mode == "duplex"
                and source.layout.mode != "duplex"):
            # the source never heard a user: its user-audio tables hold only "not started". Start
            # them as copies of its model-audio tables, so speech the user says enters the
            # temporal transformer as the same codes did in training (an ASR-trained model's
            # reading of speech carries over to the user's channel)
            with torch.no_grad():
                lm.audio_emb[config.n_q:] = lm.audio_emb[:config.n_q]
        return lm

    def _warm_lm(self) -> LM:
        from .warmstart import lm_config_for, read_text_lm, warm_start

        source = None if self.config.warm_start == "gguf" else self.config.warm_start
        text = read_text_lm(source)
        rows = None
        if text.config.vocab != self.shards.vocab_size:
            rows = self._trimmed_rows(source, text.config.vocab)
        self.model_config = lm_config_for(text.config, self.model_config, vocab=len(rows) if rows else None)
        lm = LM(self.model_config)
        if self.config.warm_weights:
            warm_start(lm, text, rows=rows)
        return lm

    def _trimmed_rows(self, source, vocab: int) -> list:
        """The warm-start rows of a trimmed Gemma tokenizer's ids (`voxlm lm tokenize --trim`)."""
        from .tokenizer import load_gemma_tokenizer, source_rows

        if source is not None and not str(source).endswith(".gguf"):
            raise VoxlmError(f"the warm-start model has {vocab} text ids, the tokens in "
                             f"{self.shards.folder} {self.shards.vocab_size}",
                             "tokenize with the warm-start model's tokenizer")
        return source_rows(self.shards.tokenizer(), load_gemma_tokenizer(source))

    def wrap(self, dist_info):
        if dist_info.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
            self.lm = DDP(self.lm, device_ids=ids, broadcast_buffers=False)
            self.modules = {"lm": self.lm}

    def shard(self, dist_info, bf16: bool):
        """FSDP2 instead of DDP: each transformer block its own unit, the root the rest; the
        optimizer built again on the sharded parameters (the Trainer's resume fills it)."""
        import warnings

        from ..sharding import shard

        # the audio logits are a view (einsum's); FSDP2 warns that an in-place op on it would
        # skip its backward hook, and train_step only reads it
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPLM\) returned a view")
        blocks = [*self.lm.temporal.blocks, *self.lm.depth.blocks]
        self.lm = shard(self.lm, blocks, dist_info.device, bf16)
        self.modules = {"lm": self.lm}
        self.optimizers = {"lm": self._optimizer()}

    def unwrap(self):
        self.lm = unwrap(self.lm)
        self.modules = {"lm": self.lm}

    def state(self) -> dict:
        return {"model_config": asdict(self.model_config), "train_config": asdict(self.config),
                "tokens": {k: self.shards.header[k]["sha256"] for k in ("codec", "tokenizer")}}

    def load_state(self, state: dict):
        saved = state.get("model_config")
        if saved and saved != asdict(self.model_config):
            raise VoxlmError("the run folder holds an LM with a different config",
                             "pass the same --config and --data as before, or a new --out folder")

    @property
    def valid_every(self) -> int:
        return self.config.valid_every

    def validate(self) -> dict:
        """Held-out losses of the training layout on split valid, on every process (a sharded
        forward all-gathers); the model back in train mode after."""
        from ..eval.lm import layout_losses

        lm, n_q = unwrap(self.lm), self.model_config.n_q  # DDP: its module, no collective
        lm.eval()
        try:
            sums, counts, _, _ = layout_losses(lm, self.valid_data, self.config.valid_limit)
        finally:
            lm.train()
        means = (sums / counts.clamp(min=1)).tolist()  # text (0 without text targets), codebooks
        text, audio = means[0], sum(means[1:1 + n_q]) / n_q
        out = {"valid_loss": text + audio, "valid_text_loss": text, "valid_audio_loss": audio,
               "valid_semantic_loss": means[1]}
        if self.model_config.listen:  # beside valid_loss, which stays comparable across runs
            out["valid_listen_loss"] = means[-1]
        return out

    def export(self, out: Path, weights: dict | None = None, name: str = "model.safetensors"):
        """Write the model file `name`; `weights`: the full state dicts by module name when the
        modules are sharded (the Trainer gathers them)."""
        header, layout = self.shards.header, self.config.layout
        extra = {"mode": layout.mode, "tokenizer": header["tokenizer"],
                 "codec_sha256": header["codec"]["sha256"], "codec_path": header["codec"]["path"],
                 "codec_codes_of": header["codec"].get("codes_of", []),
                 "frame_rate": header["frame_rate"], "tts_delay": layout.tts_delay,
                 "asr_delay": layout.asr_delay, "duplex_text_delay": layout.duplex_text_delay,
                 "listen_delay": layout.listen_delay}
        state = weights["lm"] if weights else unwrap(self.lm).state_dict()
        save_model(Path(out) / name, "lm", unwrap(self.lm).config, state, extra=extra)
        source, target = self.shards.folder / "tokenizer.model", Path(out) / "tokenizer.model"
        if not target.exists() or target.read_bytes() != source.read_bytes():
            from ..data import write_atomic

            write_atomic(target, source.read_bytes())

    def batch(self, step: int, dist_info):
        """This process's microbatches of the global batch of `step`: accum x [b, S, T]."""
        self._began = time.perf_counter()
        parts = self.data.batch(step, dist_info.rank, dist_info.world, self.config.accum)
        return [p.to(dist_info.device) for p in parts]

    def train_step(self, microbatches, step: int) -> dict:
        c, mc, world = self.config, self.model_config, self.dist.world
        began = self._began or time.perf_counter()
        device = microbatches[0].device
        counts = sum(target_counts(t, mc.text_card, mc.n_q, mc.card) for t in microbatches)
        frames = float(sum(t.shape[0] * t.shape[2] for t in microbatches))
        if world > 1:  # the whole global batch's target counts normalise every process's loss
            dist.all_reduce(counts)
        weights = torch.ones(len(counts), device=device) / mc.n_q
        weights[0], weights[1] = c.text_weight, c.semantic_weight / mc.n_q
        if mc.listen:
            weights[-1] = c.listen_weight
        scale = (weights * world / counts.clamp(min=1)).float()  # DDP averages over processes
        sums = torch.zeros(len(counts), device=device, dtype=torch.float64)
        for index, tokens in enumerate(microbatches):
            with no_sync(self.lm, index == len(microbatches) - 1):
                loss_sums, _ = stream_losses(self.lm(tokens), tokens)
                (loss_sums * scale).sum().backward()
            sums += loss_sums.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.lm.parameters(), c.grad_clip)
        self.optimizers["lm"].step()
        self.optimizers["lm"].zero_grad(set_to_none=True)
        stats = torch.cat([sums, torch.tensor([frames], device=device, dtype=torch.float64)])
        if world > 1:
            dist.all_reduce(stats)
        means = (stats[:-1] / counts.clamp(min=1)).tolist()  # text, codebooks 1..n_q (, listen)
        seconds = max(time.perf_counter() - began, 1e-9)
        text, audio = means[0], sum(means[1:1 + mc.n_q]) / mc.n_q
        out = {"loss": text + audio, "text_loss": text, "audio_loss": audio,
               "semantic_loss": means[1], "grad_norm": float(grad_norm),
               "frames_per_s": float(stats[-1]) / seconds,
               "tokens_per_s": float(stats[-1]) * mc.n_streams / seconds}
        if mc.listen:
            out["listen_loss"] = means[-1]
        return out
