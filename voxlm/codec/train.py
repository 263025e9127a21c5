"""Codec training task for the shared loop (`voxlm.train.Trainer`).

Losses: multi-scale mel L1, commitment, semantic distillation (codebook 1 against Whisper
tiny.en encoder states), and from `adversarial_start` on, least-squares GAN losses of
multi-period and multi-resolution STFT discriminators with feature matching.
Quantizer dropout: half of the steps use a random number of codebooks (1..n_q), so one model
serves every bitrate. Batches are a pure function of (seed, step): resume is exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..audio import SAMPLE_RATE, load_audio
from ..checkpoint import save_model
from ..data import read_manifest
from ..errors import VoxlmError
from ..pitch import cache_pitch, load_pitch
from ..train import no_sync, unwrap
from .discriminators import Discriminators
from .losses import (MultiResolutionSTFTLoss, MultiScaleMelLoss, discriminator_loss, distill_loss,
                     feature_matching_loss, generator_loss)
from .model import STFT_HOP, Codec, CodecConfig
from .teacher import TEACHER_DIM, TEACHER_RATE, cache_teacher_features, load_teacher_features


@dataclass
class CodecTrainConfig:
    batch_size: int = 8  # global batch, split over processes and microbatches
    accum: int = 1  # microbatches per step
    segment_frames: int = 24  # codec frames per training segment (24 x 80 ms = 1.92 s)
    lr: float = 1e-3
    disc_lr: float = 5e-4
    adversarial_start: int = 2000  # steps of reconstruction-only training before the GAN
    disc_frames: int = 8  # the discriminators see a random crop of this many frames (0.64 s)
    mel_weight: float = 15.0
    stft_weight: float = 5.0  # linear-frequency multi-resolution STFT loss (harmonic detail)
    commit_weight: float = 1.0
    distill_weight: float = 5.0
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    dropout_share: float = 0.5  # share of steps with a random number of codebooks
    grad_clip: float = 5.0
    max_items: int = 0  # 0: every training item
    # Whisper's states carry absolute position strongly (about a third of their variance, which
    # a causal codec on random crops cannot know): distil towards states with the mean state at
    # each position removed (as `voxlm units` does), which leaves what is said
    remove_teacher_position: bool = True
    pitch_weight: float = 5.0  # L1 on log F0 (voiced frames) + voicing cross-entropy
    pitch_teacher_forcing: bool = True  # synthesise with the target F0 where it is voiced
    band_limit_share: float = 0.3  # rows low-passed at 3.4-4 kHz, like telephone speech
    gain_db: tuple = (-10.0, 6.0)  # range of the random level change per row
    pitch_shift: float = 0.0  # semitones: resample a share of the rows up to this far either way
    pitch_shift_share: float = 0.5
    init: str = ""  # a codec file (or run folder) whose weights the run starts from
    # train only the decoding side (decoder and the codebooks' output projections): the
    # encoder and codebooks stay as they are, so every token written with them stays valid
    # and the language models trained on those tokens keep working with the new decoder
    decoder_only: bool = False
    # train only codebook 1's side (the semantic layers, codebook 1 and its projections, the
    # distillation head) on the distillation and commitment losses; the convolutions and the
    # acoustic codebooks stay as they are. Its new codes need a decoder that reads them next
    # (a --decoder-only run from this one)
    semantic_only: bool = False


class CodecData:
    """Training items in memory: int16 audio, teacher states pooled to the codec frame rate and
    YIN F0 targets at 100 Hz (the decoder's frame t ends on the tracker's frame t + 1)."""

    def __init__(self, corpus, config: CodecConfig, split: str = "train", max_items: int = 0,
                 progress: bool = True, remove_teacher_position: bool = False,
                 teacher: bool = True):
        corpus = Path(corpus)
        manifest = corpus / "manifest.jsonl"
        if not manifest.exists():
            raise VoxlmError(f"no manifest.jsonl in {corpus}",
                             "make a corpus first: voxlm synth corpus --out DIR --minutes 30")
        rows = [r for r in read_manifest(manifest) if r["split"] == split]
        if max_items:
            rows = rows[:max_items]
        if not rows:
            raise VoxlmError(f"no {split} items in {manifest}", "make a larger corpus")
        if teacher:  # without: zero states (a decoder-only run has no distillation loss)
            cache_teacher_features(corpus, rows, progress=progress)
        if config.vocoder == "harmonic":
            cache_pitch(corpus, rows, progress=progress)
        self.hop = config.hop
        pool = int(TEACHER_RATE / config.frame_rate)  # 4 teacher states per codec frame
        self.audio, self.teacher, self.pitch = [], [], []
        self.sub = self.hop // STFT_HOP  # decoder frames per codec frame
        raw = {row["id"]: load_teacher_features(corpus, row["id"]) if teacher else None
               for row in rows}  # [T50, 384]
        normalizer = None
        if remove_teacher_position and teacher:
            from ..units import Units, position_means

            normalizer = Units(np.zeros((2, TEACHER_DIM), np.float32), *position_means(list(raw.values())))
        for row in tqdm(rows, desc="loading corpus", unit="item", disable=not progress):
            audio = load_audio(corpus / row["audio"])
            frames = len(audio) // self.hop
            if frames < 1:
                continue
            self.audio.append((np.clip(audio[: frames * self.hop], -1, 1) * 32767).astype(np.int16))
            states = raw[row["id"]]
            if states is None:
                self.teacher.append(np.zeros((frames, 1), np.float16))
            else:
                if normalizer is not None:
                    states = normalizer.normalize(states)
                states = states[: frames * pool]
                states = np.pad(states, ((0, frames * pool - len(states)), (0, 0)))
                self.teacher.append(states.reshape(frames, pool, -1).mean(1).astype(np.float16))
            if config.vocoder == "harmonic":
                f0 = load_pitch(corpus, row["id"])[1: frames * self.sub + 1]
                self.pitch.append(np.pad(f0, (0, frames * self.sub - len(f0))).astype(np.float16))
        self.seconds = sum(len(a) for a in self.audio) / config.sample_rate

    def batch(self, seed: int, step: int, size: int, frames: int, band_limit_share: float = 0.0,
              gain_db: tuple = (0.0, 0.0), pitch_shift: float = 0.0,
              pitch_shift_share: float = 0.5):
        """-> audio [size, 1, frames * hop], teacher [size, frames, 384], F0 targets
        [size, frames * hop / 160] (Hz, 0 where unvoiced; all 0 without pitch), all float32.
        A `band_limit_share` of the rows is low-passed at 3.4-4 kHz (telephone speech) and each
        row's level is moved by a gain drawn from `gain_db`: the codec reproduces what it gets.
        With `pitch_shift` (semitones), a `pitch_shift_share` of the rows is resampled by a
        factor up to that far either way: F0 and formants move together, as from a smaller or
        larger speaker, so voices outside the corpus's pitch range are heard in training."""
        ratios = np.ones(size)
        if pitch_shift > 0:  # their own draws: the items do not depend on them
            shifts = np.random.default_rng([seed, step, 13])
            shifted = shifts.random(size) < pitch_shift_share
            ratios[shifted] = 2.0 ** (shifts.uniform(-pitch_shift, pitch_shift, size)[shifted] / 12)
        rng = np.random.default_rng([seed, step])
        audio = np.zeros((size, 1, frames * self.hop), np.float32)
        teacher = np.zeros((size, frames, self.teacher[0].shape[1]), np.float32)
        f0 = np.zeros((size, frames * self.sub), np.float32)
        for row, item in enumerate(rng.integers(len(self.audio), size=size)):
            have = len(self.teacher[item])
            start = int(rng.integers(0, max(1, have - frames + 1)))
            if ratios[row] != 1.0:
                self._shifted_row(item, start, float(ratios[row]), audio[row, 0], teacher[row],
                                  f0[row])
                continue
            take = min(frames, have - start)
            clip = self.audio[item][start * self.hop: (start + take) * self.hop]
            audio[row, 0, : len(clip)] = clip / 32767.0
            teacher[row, :take] = self.teacher[item][start: start + take]
            if self.pitch:
                f0[row, : take * self.sub] = self.pitch[item][start * self.sub: (start + take) * self.sub]
        for row in range(size):  # drawn after the items, so the items do not depend on these
            if rng.random() < band_limit_share:
                spectrum = np.fft.rfft(audio[row, 0])
                cutoff = rng.uniform(3400.0, 4000.0) / (SAMPLE_RATE / 2) * (len(spectrum) - 1)
                spectrum[int(cutoff):] = 0.0
                audio[row, 0] = np.fft.irfft(spectrum, n=audio.shape[-1])
            audio[row, 0] *= 10.0 ** (rng.uniform(*gain_db) / 20.0)
        np.clip(audio, -1.0, 1.0, out=audio)
        return torch.from_numpy(audio), torch.from_numpy(teacher), torch.from_numpy(f0)

    def _shifted_row(self, item: int, start: int, ratio: float, audio, teacher, f0):
        """Fill one row (audio [N], teacher [frames, D], f0 [N / 160]) from `item` at frame
        `start`, played `ratio` times faster: the source span of N * ratio samples is resampled
        to N (band-limited, by FFT), F0 scales by `ratio` and the targets follow the time warp."""
        n = len(audio)
        source = self.audio[item][start * self.hop: start * self.hop + int(round(n * ratio))]
        out = min(n, int(len(source) / ratio))
        if out < 2:
            return
        spectrum = np.fft.rfft(source.astype(np.float32) / 32767.0)
        keep = min(len(spectrum), out // 2 + 1)  # above the new Nyquist is cut (anti-aliasing)
        audio[:out] = np.fft.irfft(spectrum[:keep], n=out) * (out / len(source))
        frames = -(-out // self.hop)
        index = np.minimum(start + (np.arange(frames) * ratio).astype(int), len(self.teacher[item]) - 1)
        teacher[:frames] = self.teacher[item][index]
        if self.pitch:
            track = self.pitch[item]
            sub = -(-out // STFT_HOP)
            index = start * self.sub + (np.arange(sub) * ratio).astype(int)
            inside = index < len(track)
            f0[:sub][inside] = track[index[inside]] * ratio


class CodecTask:
    name = "codec"

    def __init__(self, corpus, model_config: CodecConfig, config: CodecTrainConfig,
                 progress: bool = True):
        self.corpus, self.model_config, self.config = corpus, model_config, config
        self.progress = progress
        self.mel_loss = MultiScaleMelLoss()
        self.stft_loss = MultiResolutionSTFTLoss()

    # ---- the interface the Trainer uses ----
    def setup(self, dist, train_config):
        """Called by the Trainer after seeding, so initial weights follow the seed."""
        self.dist, self.train_config = dist, train_config
        self.codec = Codec(self.model_config)
        self.discriminators = Discriminators()
        for flag, value in (("--batch-size", self.config.batch_size), ("--accum", self.config.accum),
                            ("--segment-frames", self.config.segment_frames)):
            if value < 1:
                raise VoxlmError(f"{flag} is {value}", "pass a whole number of at least 1")
        if self.config.batch_size % (dist.world * self.config.accum):
            raise VoxlmError(f"batch size {self.config.batch_size} does not split over "
                             f"{dist.world} processes x {self.config.accum} microbatches",
                             "choose a batch size divisible by processes x accum")
        if self.config.init:
            code_ids = load_initial_weights(self.codec, self.config.init)
            if self.config.decoder_only:  # it makes the codes of the file it starts from
                self.codec.codes_of = code_ids
        elif self.config.decoder_only:
            raise VoxlmError("--decoder-only needs the codec whose codes it keeps",
                             "pass --init CODEC (e.g. voxlm/assets/codec.safetensors)")
        if self.config.semantic_only:
            if self.config.decoder_only:
                raise VoxlmError("--semantic-only and --decoder-only train opposite sides",
                                 "pass one of them")
            if not (self.config.init and self.model_config.semantic_layers):
                raise VoxlmError("--semantic-only trains the semantic layers of a trained codec",
                                 "pass --init CODEC and --semantic-layers N (e.g. 4)")
        k = self.model_config.decoder_codebooks
        if k and not self.config.decoder_only:
            raise VoxlmError(f"--decoder-codebooks {k} trains a decoder for the codes of a codec "
                             "that exists", "add --decoder-only --init CODEC")
        if not 0 <= k < self.model_config.n_q:
            raise VoxlmError(f"--decoder-codebooks {k}",
                             f"pass 1 to {self.model_config.n_q - 1} (0: all codebooks)")
        self.data = CodecData(self.corpus, self.model_config, max_items=self.config.max_items,
                              progress=self.progress and dist.main,
                              remove_teacher_position=self.config.remove_teacher_position,
                              teacher=not self.config.decoder_only)
        if self.config.decoder_only:
            for part in (self.codec.encoder, self.codec.distill, self.codec.quantizer.semantic,
                         self.codec.quantizer.acoustic, self.codec.quantizer.semantic_in,
                         self.codec.quantizer.acoustic_in):
                part.requires_grad_(False)
        if self.config.semantic_only:
            self.codec.requires_grad_(False)
            q = self.codec.quantizer
            sides = [m for name, m in self.codec.encoder.named_children()
                     if name.startswith("semantic")]  # its layers and their projections
            for part in (*sides, self.codec.distill, q.semantic_in, q.semantic_out):
                part.requires_grad_(True)
            # codebook 1 starts again from k-means of its new inputs (a resumed run loads its own)
            q.semantic.codebooks[0].initialized.fill_(False)
        self.codec.to(dist.device)
        self.discriminators.to(dist.device)
        self.modules = {"codec": self.codec, "discriminators": self.discriminators}
        trainable = [p for p in self.codec.parameters() if p.requires_grad]
        self.optimizers = {
            "codec": torch.optim.AdamW(trainable, lr=self.config.lr, betas=(0.8, 0.99)),
            "discriminators": torch.optim.AdamW(self.discriminators.parameters(),
                                                lr=self.config.disc_lr, betas=(0.8, 0.99)),
        }

    def wrap(self, dist):
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.codec = DDP(self.codec, device_ids=ids, find_unused_parameters=True,
                             broadcast_buffers=False)
            self.discriminators = DDP(self.discriminators, device_ids=ids, broadcast_buffers=False)
            self.modules = {"codec": self.codec, "discriminators": self.discriminators}

    def unwrap(self):
        self.codec, self.discriminators = unwrap(self.codec), unwrap(self.discriminators)
        self.modules = {"codec": self.codec, "discriminators": self.discriminators}

    def state(self) -> dict:
        return {"model_config": asdict(self.model_config), "train_config": asdict(self.config),
                "codes_of": list(unwrap(self.codec).codes_of)}

    def load_state(self, state: dict):
        saved = state.get("model_config")
        if saved and saved != asdict(self.model_config):
            raise VoxlmError("the run folder holds a codec with a different config",
                             "pass the same --config as before, or a new --out folder")
        for flag in ("decoder_only", "semantic_only"):
            was = state.get("train_config", {}).get(flag, False)
            if was != getattr(self.config, flag):
                raise VoxlmError(f"the run folder holds a run {'with' if was else 'without'} "
                                 f"--{flag.replace('_', '-')}",
                                 "pass the same flags as before, or a new --out folder")
        if "codes_of" in state:  # as it was when the run started, whatever --init holds now
            unwrap(self.codec).codes_of = tuple(state["codes_of"])

    def export(self, out: Path):
        export_codec(unwrap(self.codec), Path(out) / "model.safetensors")

    def batch(self, step: int, dist):
        """This process's microbatches of the global batch for `step`."""
        tensors = self.data.batch(self.train_config.seed, step, self.config.batch_size,
                                  self.config.segment_frames, self.config.band_limit_share,
                                  self.config.gain_db, self.config.pitch_shift,
                                  self.config.pitch_shift_share)  # audio, teacher, F0
        per_rank = self.config.batch_size // dist.world
        lo = dist.rank * per_rank
        parts = [t[lo: lo + per_rank].to(dist.device).chunk(self.config.accum) for t in tensors]
        return list(zip(*parts))

    def n_q_for_step(self, step: int) -> int:
        if self.model_config.decoder_codebooks:  # a voice decoder reads these alone
            return self.model_config.decoder_codebooks
        rng = np.random.default_rng([self.train_config.seed, step, 7])
        if rng.random() < self.config.dropout_share:
            return int(rng.integers(1, self.model_config.n_q + 1))
        return self.model_config.n_q

    def train_step(self, microbatches, step: int) -> dict:
        c = self.config
        adversarial = step >= c.adversarial_start
        n_q = self.n_q_for_step(step)
        hop, frames = self.model_config.hop, self.config.segment_frames
        crop_frames = min(c.disc_frames, frames)
        crop = int(np.random.default_rng([self.train_config.seed, step, 11]).integers(
            0, frames - crop_frames + 1)) * hop
        window = slice(crop, crop + crop_frames * hop)
        if c.semantic_only:
            return self._semantic_step(microbatches)
        sums: dict = {}
        for index, (audio, teacher, f0) in enumerate(microbatches):
            last = index == len(microbatches) - 1
            with no_sync(self.codec, last), no_sync(self.discriminators, last):
                out = self.codec(audio, n_q, f0 if c.pitch_teacher_forcing else None,
                                 frozen_codes=c.decoder_only)
                fake = out.audio
                losses = {"mel": self.mel_loss(fake[:, 0], audio[:, 0])}
                if not c.decoder_only:  # the codes' own losses: nothing to learn when frozen
                    losses["commit"] = out.result.commit_loss
                    losses["distill"] = distill_loss(out.semantic_states, teacher)
                if c.stft_weight:
                    losses["stft"] = self.stft_loss(fake[:, 0], audio[:, 0])
                total = (c.mel_weight * losses["mel"] + c.commit_weight * losses.get("commit", 0.0)
                         + c.distill_weight * losses.get("distill", 0.0)
                         + c.stft_weight * losses.get("stft", 0.0))
                if out.pitch is not None:
                    losses["f0"], losses["voicing"] = pitch_losses(out.pitch, f0)
                    total = total + c.pitch_weight * (losses["f0"] + losses["voicing"])
                if adversarial:
                    discriminators = unwrap(self.discriminators)
                    discriminators.requires_grad_(False)
                    fake_scores, fake_features = discriminators(fake[..., window])
                    with torch.no_grad():
                        _, real_features = discriminators(audio[..., window])
                    losses["adv"] = generator_loss(fake_scores)
                    losses["fm"] = feature_matching_loss(real_features, fake_features)
                    total = total + c.adv_weight * losses["adv"] + c.fm_weight * losses["fm"]
                    discriminators.requires_grad_(True)
                (total / len(microbatches)).backward()
                if adversarial:
                    scores, _ = self.discriminators(torch.cat([audio, fake.detach()])[..., window])
                    half = audio.shape[0]
                    losses["disc"] = discriminator_loss([s[:half] for s in scores],
                                                        [s[half:] for s in scores])
                    (losses["disc"] / len(microbatches)).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / len(microbatches)
        names = ["codec"] + (["discriminators"] if adversarial else [])
        for name in names:
            module = self.modules[name]
            sums[f"grad_norm_{name}"] = float(torch.nn.utils.clip_grad_norm_(module.parameters(),
                                                                             c.grad_clip))
            self.optimizers[name].step()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        perplexity = out.result.perplexity
        sums["perplexity_1"] = float(perplexity[0])
        if len(perplexity) > 1:
            sums["perplexity_2"] = float(perplexity[1])
        sums["n_q"] = n_q
        return sums


    def _semantic_step(self, microbatches) -> dict:
        """--semantic-only: distillation and commitment of codebook 1, nothing decoded."""
        c, sums = self.config, {}
        for index, (audio, teacher, _) in enumerate(microbatches):
            with no_sync(self.codec, index == len(microbatches) - 1):
                states, commit, perplexity = self.codec(audio, semantic_only=True)
                losses = {"distill": distill_loss(states, teacher), "commit": commit}
                total = c.distill_weight * losses["distill"] + c.commit_weight * commit
                (total / len(microbatches)).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / len(microbatches)
        sums["grad_norm_codec"] = float(torch.nn.utils.clip_grad_norm_(
            self.codec.parameters(), c.grad_clip))
        self.optimizers["codec"].step()
        self.optimizers["codec"].zero_grad(set_to_none=True)
        sums["perplexity_1"] = float(perplexity[0])
        return sums


def pitch_losses(pitch, f0: torch.Tensor) -> tuple:
    """pitch: the vocoder's predictions [B, T]; f0 [B, T] target Hz (0 = unvoiced) ->
    (L1 of log F0 on voiced frames, averaged over all frames; voicing binary cross-entropy)."""
    voiced = f0 > 0
    voicing = F.binary_cross_entropy_with_logits(pitch.voicing_logit, voiced.float())
    error = (pitch.log_f0 - f0.clamp(min=1.0).log()).abs() * voiced
    return error.mean(), voicing  # over all frames: equal shares keep DDP equal to one process


TRAINING_ONLY = ("embed_sum", "usage", "idle")  # quantizer statistics inference does not need


def load_initial_weights(codec: Codec, path) -> tuple:
    """`codec` takes the weights of a codec file or run folder with the same config (or one
    without semantic layers, which then start from their initialisation). Model
    files hold no EMA statistics (`export_codec`): they restart from the codebooks, as after
    k-means. -> the sha256 of the file and of those whose codes it keeps (Codec.codes_of)."""
    import hashlib

    from .model import load_codec
    from .quantize import Codebook

    path = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
    source = load_codec(path)  # validates the file
    # a run may add semantic layers to a codec without them, or keep those it has
    free = {"decoder_codebooks": 0}
    if not source.config.semantic_layers:
        free.update(semantic_layers=0, semantic_dim=0, semantic_ff_mult=4)
    if replace(source.config, **free) != replace(codec.config, **free):
        c = source.config
        flags = (f" and --semantic-layers {c.semantic_layers} --semantic-dim {c.semantic_dim} "
                 f"--semantic-ff-mult {c.semantic_ff_mult}" if c.semantic_layers else "")
        raise VoxlmError(f"{path} holds a codec with another config than this run's",
                         f"pass the --config it was trained with{flags}")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith(TRAINING_ONLY)}
    codec.load_state_dict(state, strict=False)  # all but the EMA statistics, set here:
    with torch.no_grad():
        for module in codec.modules():
            if isinstance(module, Codebook):
                module.embed_sum.copy_(module.embed)
                module.usage.fill_(1.0)
                module.idle.zero_()
    return (hashlib.sha256(path.read_bytes()).hexdigest(), *source.codes_of)


def export_codec(codec: Codec, path, dtype=None, int8: bool = False, voice: bool = False) -> Path:
    """Inference weights: the EMA statistics used only by training are left out. `voice`: the
    decoding side alone of a voice decoder (`--decoder-codebooks K`, trained `--decoder-only`
    from the shipped codec), which `load_codec` puts back on the shipped codec's encoder."""
    from .model import VOICE_PART, decoding_side

    state = {k: v for k, v in codec.state_dict().items() if not k.endswith(TRAINING_ONLY)}
    extra = {"codes_of": list(codec.codes_of)} if codec.codes_of else {}
    if voice:
        k = codec.config.decoder_codebooks
        if not k or not codec.codes_of:
            raise VoxlmError("--voice exports a voice decoder, and this codec decodes every "
                             "codebook it is given" if not k else "--voice: this codec's codes "
                             "are its own, so its decoder cannot go without its encoder",
                             "train one with `codec train --init voxlm/assets/codec.safetensors "
                             "--decoder-only --decoder-codebooks 1`, or leave out --voice")
        state = {name: t for name, t in state.items() if decoding_side(name, k)}
        extra["part"] = VOICE_PART
    return save_model(path, "codec", codec.config, state, dtype=dtype, int8=int8,
                      extra=extra or None)
