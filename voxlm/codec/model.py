"""The voxlm codec: causal STFT encoder, split residual VQ, causal iSTFT (Vocos-like) decoder.

    audio [B, 1, N] 16 kHz --CausalSTFT(640, hop 160)--> log|X| [B, 321, N/160] (100 Hz)
      --ConvNeXt blocks, patch x8--> [B, C, N/1280] (12.5 Hz) --ConvNeXt, transformer--> z [B, D, T]
      --SplitRVQ--> codes [B, K, T] --> quantized [B, D, T]
      --transformer, ConvNeXt, unpatch x8, ConvNeXt--> [B, C, N/160] (100 Hz)
      --harmonic-plus-noise vocoder (F0, envelope, noise filter per 10 ms)--> audio [B, 1, N]
        (or, with vocoder="istft", a linear head of log-magnitude and phase --> CausalISTFT)

Few wide layers rather than many thin ones: frame by frame on a CPU thread, the cost is
mostly per operation, not per multiply-add.

Every layer is causal and streams: `with codec.streaming(1): codec.encode(frame)` takes one
frame of `hop` = 1280 samples (80 ms) and gives [1, K, 1] codes; `decode` gives them back as
1280 samples. Bits per second = K * log2(codebook_size) * 12.5.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import SAMPLE_RATE
from ..modules.conv import CausalConv1d, CausalISTFT, CausalSTFT, Upsample
from ..modules.streaming import StreamingModule
from ..modules.transformer import Transformer
from .quantize import QuantizedResult, SplitRVQ, perplexity
from .vocoder import HarmonicNoiseVocoder, Pitch

N_FFT = 640  # 40 ms analysis and synthesis windows
STFT_HOP = 160  # 10 ms: the 100 Hz rate of the outer ConvNeXt stage


@dataclass
class CodecConfig:
    channels: tuple = (192, 384)  # width of each stage, outermost (100 Hz) first
    strides: tuple = (8,)  # rate divisor between consecutive stages: 100 Hz / 8 = 12.5 Hz
    blocks: tuple = (1, 2)  # ConvNeXt blocks per stage, encoder and decoder each
    latent_dim: int = 128  # D, the quantizer's input and output width
    codebook_dim: int = 64  # width the codebooks live in
    n_q: int = 12  # codebooks at the top bitrate; codebook 1 is semantic
    codebook_size: int = 1024
    transformer_layers: int = 0  # causal transformer layers at 12.5 Hz, each side
    transformer_heads: int = 4
    transformer_context: int = 125  # frames attended (10 s)
    kernel_size: int = 7  # depthwise kernel of the ConvNeXt blocks
    ff_mult: int = 3
    teacher_dim: int = 384  # semantic teacher width (Whisper tiny.en)
    sample_rate: int = SAMPLE_RATE
    vocoder: str = "harmonic"  # "harmonic" (F0-driven sines + noise) or "istft" (free phases)
    # codebooks the decoder reads (0: all it is given). A voice decoder (`codec train
    # --decoder-codebooks 1`) reads codebook 1 alone and speaks it in the one voice it was
    # trained on, ignoring the acoustic codebooks a language model generates
    decoder_codebooks: int = 0
    # causal transformer layers at 12.5 Hz that read the encoder's features for codebook 1
    # alone (0: codebook 1 reads the latent the acoustic codebooks read). Depth to turn what
    # the convolutions hear into what was said, whoever says it (`codec train --semantic-only`)
    semantic_layers: int = 0
    semantic_dim: int = 0  # their width (0: the encoder's, channels[-1]); narrower is smaller
    semantic_ff_mult: int = 4  # their MLP's hidden width over semantic_dim

    @property
    def hop(self) -> int:  # samples per codec frame
        return STFT_HOP * math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop  # 12.5 Hz

    def kbps(self, n_q: int | None = None) -> float:
        n_q = self.n_q if n_q is None else n_q
        return n_q * math.log2(self.codebook_size) * self.frame_rate / 1000

    def n_q_for_kbps(self, kbps: float) -> int:
        """The most codebooks whose bitrate is at most `kbps` (and that the decoder reads)."""
        n_q = int(kbps * 1000 / (math.log2(self.codebook_size) * self.frame_rate) + 1e-9)
        return max(1, min(self.decoder_codebooks or self.n_q, n_q))


def codec_config(name: str) -> CodecConfig:
    """Named presets: `tiny` for tests, `base` for the shipped model."""
    if name == "tiny":
        return CodecConfig(channels=(32, 64), blocks=(1, 1), latent_dim=32, codebook_dim=16,
                           n_q=4, codebook_size=64)
    if name == "base":
        return CodecConfig()
    raise ValueError(f"unknown codec config {name!r}; choose tiny or base")


class ConvNeXtBlock(StreamingModule):
    """Causal depthwise conv, LayerNorm, pointwise MLP, residual. x [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel_size: int, ff_mult: int):
        super().__init__()
        self.dwconv = CausalConv1d(channels, channels, kernel_size, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, ff_mult * channels), nn.GELU(),
                                nn.Linear(ff_mult * channels, channels))
        self.scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            return self.step(x.transpose(1, 2)).transpose(1, 2)
        y = self.ff(self.norm(self.dwconv(x).transpose(1, 2)))  # [B, T, C]
        return x + (y * self.scale).transpose(1, 2)

    def step(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, T, C], streaming
        norm, ff_in, ff_out = self.norm, self.ff[0], self.ff[2]
        y = F.layer_norm(self.dwconv.step(x), norm.normalized_shape, norm.weight, norm.bias,
                         norm.eps)
        y = F.linear(F.gelu(F.linear(y, ff_in.weight, ff_in.bias)), ff_out.weight, ff_out.bias)
        return torch.addcmul(x, y, self.scale)  # x + y * scale


def _stage(channels: int, blocks: int, config: CodecConfig) -> list:
    return [ConvNeXtBlock(channels, config.kernel_size, config.ff_mult) for _ in range(blocks)]


class Encoder(StreamingModule):
    """audio [B, 1, N] -> latents [B, D, N / hop]; with semantic layers [B, 2D, N / hop]: the
    acoustic latent, then codebook 1's own (`SplitRVQ` reads each half)."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        c, b = config.channels, config.blocks
        self.stft = CausalSTFT(N_FFT, STFT_HOP)
        layers = [CausalConv1d(N_FFT // 2 + 1, c[0], 1), *_stage(c[0], b[0], config)]
        for i, stride in enumerate(config.strides, start=1):
            layers += [CausalConv1d(c[i - 1], c[i], stride, stride=stride), *_stage(c[i], b[i], config)]
        self.convs = nn.Sequential(*layers)
        self.transformer = (Transformer(c[-1], config.transformer_layers, config.transformer_heads,
                                        config.transformer_context)
                            if config.transformer_layers else None)
        self.out = nn.Conv1d(c[-1], config.latent_dim, 1)
        if config.semantic_layers:
            width = config.semantic_dim or c[-1]
            if width != c[-1]:
                self.semantic_in = nn.Conv1d(c[-1], width, 1)
            self.semantic = Transformer(width, config.semantic_layers, config.transformer_heads,
                                        config.transformer_context, config.semantic_ff_mult)
            self.semantic_out = nn.Conv1d(width, config.latent_dim, 1)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Offline: audio [B, 1, N] -> the convolutions' features [B, C, N / hop]."""
        x = self.convs(self.stft(audio))  # [B, C, T]
        if self.transformer is not None:
            x = x + self.transformer(x.transpose(1, 2)).transpose(1, 2)
        return x

    def semantic_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: features [B, C, T] -> codebook 1's latent [B, D, T] (semantic layers only)."""
        if hasattr(self, "semantic_in"):
            x = self.semantic_in(x)  # [B, semantic_dim, T]
        return self.semantic_out(self.semantic(x.transpose(1, 2)).transpose(1, 2))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            return self.step(audio).transpose(1, 2)
        x = self.features(audio)
        if hasattr(self, "semantic"):
            return torch.cat([self.out(x), self.semantic_latent(x)], 1)
        return self.out(x)

    def step(self, audio: torch.Tensor) -> torch.Tensor:
        """Streaming, channels-last: audio [B, 1, N] -> latents [B, N / hop, D or 2D]."""
        x = self.stft.step(audio[:, 0])  # [B, T100, F]
        for layer in self.convs:
            x = layer.step(x)  # [B, T, C]
        if self.transformer is not None:
            x = x + self.transformer(x)
        z = F.linear(x, self.out.weight[:, :, 0], self.out.bias)
        if hasattr(self, "semantic"):
            if hasattr(self, "semantic_in"):
                x = F.linear(x, self.semantic_in.weight[:, :, 0], self.semantic_in.bias)
            out = self.semantic_out
            return torch.cat([z, F.linear(self.semantic(x), out.weight[:, :, 0], out.bias)], -1)
        return z


class Decoder(StreamingModule):
    """latents [B, D, T] -> audio [B, 1, T * hop] and the predicted pitch (harmonic vocoder)."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        if config.vocoder not in ("harmonic", "istft"):
            raise ValueError(f"unknown vocoder {config.vocoder!r}; choose harmonic or istft")
        c, b = config.channels, config.blocks
        self.inp = nn.Conv1d(config.latent_dim, c[-1], 1)
        self.transformer = (Transformer(c[-1], config.transformer_layers, config.transformer_heads,
                                        config.transformer_context)
                            if config.transformer_layers else None)
        layers = _stage(c[-1], b[-1], config)
        for i in range(len(config.strides) - 1, -1, -1):
            layers += [Upsample(c[i + 1], c[i], config.strides[i]), *_stage(c[i], b[i], config)]
        self.convs = nn.Sequential(*layers)
        if config.vocoder == "harmonic":
            self.vocoder = HarmonicNoiseVocoder(c[0], N_FFT, STFT_HOP, config.sample_rate)
        else:
            self.head = nn.Conv1d(c[0], 2 * (N_FFT // 2 + 1), 1)
            self.istft = CausalISTFT(N_FFT, STFT_HOP)

    def forward(self, latents: torch.Tensor, f0_target: torch.Tensor | None = None):
        """-> (audio [B, 1, N], Pitch or None). `f0_target` [B, T100] Hz: see vocoder.py."""
        if self.is_streaming:
            return self.step(latents.transpose(1, 2)), None
        x = self.inp(latents)
        if self.transformer is not None:
            x = x + self.transformer(x.transpose(1, 2)).transpose(1, 2)
        x = self.convs(x)  # [B, C, T100]
        if hasattr(self, "vocoder"):
            audio, pitch = self.vocoder(x.transpose(1, 2), f0_target)
            return audio[:, None], pitch
        log_magnitude, phase = self.head(x).float().chunk(2, dim=1)  # [B, 321, T100]
        magnitude = torch.exp(log_magnitude.clamp(max=6.0))
        return self.istft(torch.polar(magnitude, phase)), None

    def step(self, latents: torch.Tensor, f0: torch.Tensor | None = None) -> torch.Tensor:
        """Streaming, channels-last: latents [B, T, D] -> audio [B, 1, T * hop]; `f0`
        [B, T100] Hz (0 unvoiced) replaces the F0 and voicing read from the codes."""
        x = F.linear(latents, self.inp.weight[:, :, 0], self.inp.bias)  # [B, T, C]
        if self.transformer is not None:
            x = x + self.transformer(x)
        for layer in self.convs:
            x = layer.step(x)
        if hasattr(self, "vocoder"):
            return self.vocoder(x, f0)[0][:, None]
        x = F.linear(x, self.head.weight[:, :, 0], self.head.bias).float()  # [B, T100, 2F]
        log_magnitude, phase = x.chunk(2, dim=-1)
        magnitude = torch.exp(log_magnitude.clamp(max=6.0))
        return self.istft.step(torch.polar(magnitude, phase))[:, None]


class _PlainCpuKernels:
    """oneDNN off while streaming calls run: on a frame's few rows its GELU costs ~10 us of
    setup where the plain kernel takes ~3 us (the streaming steps call no convolution, where
    oneDNN pays off). The switch is global to the process: other threads' convolutions meanwhile
    take the plain kernels, and the setting comes back when the last such call ends."""

    def __init__(self):
        self.lock, self.depth, self.saved = threading.Lock(), 0, True

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                self.saved = torch.backends.mkldnn.enabled
                torch.backends.mkldnn.enabled = False
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                torch.backends.mkldnn.enabled = self.saved


_plain_cpu_kernels = _PlainCpuKernels()


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, 1, N] reconstruction
    result: QuantizedResult
    semantic_states: torch.Tensor | None  # [B, T, teacher_dim] codebook 1 projected for distillation
    pitch: Pitch | None = None  # the harmonic vocoder's F0 and voicing predictions [B, T100]


class Codec(StreamingModule):
    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        # sha256 of the codec files whose codes this one makes too (a decoder-only fine-tune
        # of them): language models trained on their tokens work with this one as well
        self.codes_of: tuple = ()
        self.encoder = Encoder(config)
        self.quantizer = SplitRVQ(config.latent_dim, config.n_q, config.codebook_size,
                                  config.codebook_dim, separate=config.semantic_layers > 0)
        self.decoder = Decoder(config)
        self.distill = nn.Conv1d(config.latent_dim, config.teacher_dim, 1)

    def forward(self, audio: torch.Tensor, n_q: int | None = None,
                f0_target: torch.Tensor | None = None, frozen_codes: bool = False,
                semantic_only: bool = False) -> CodecOutput:
        """Training path: audio [B, 1, N], N a multiple of hop; f0_target [B, N / 160] Hz.
        `frozen_codes`: the encoder and codebooks run without gradients or EMA updates (the
        codes stay those of the weights as they are), and only the decoding side learns.
        `semantic_only`: `forward_semantic`'s tuple (through here, so that DDP sees the call)."""
        if semantic_only:
            return self.forward_semantic(audio)
        if frozen_codes:
            with torch.no_grad():
                codes = self.quantizer.encode(self.encoder(audio), n_q, update=False)  # [B, K, T]
            quantized = self.quantizer.decode(codes)  # the output projections still learn
            audio, pitch = self.decoder(quantized, f0_target)
            zero = quantized.new_zeros(())
            result = QuantizedResult(quantized, codes, zero, quantized,
                                     perplexity(codes, self.config.codebook_size))
            return CodecOutput(audio, result, None, pitch)
        result = self.quantizer(self.encoder(audio), n_q)
        semantic = self.distill(result.semantic).transpose(1, 2)
        audio, pitch = self.decoder(result.quantized, f0_target)
        return CodecOutput(audio, result, semantic, pitch)

    def forward_semantic(self, audio: torch.Tensor) -> tuple:
        """Codebook 1 alone, for `codec train --semantic-only`: the convolutions run without
        gradients (the acoustic codes stay as they are). audio [B, 1, N] ->
        (states [B, T, teacher_dim] to distil, commitment loss, codebook 1's perplexity)."""
        with torch.no_grad():
            x = self.encoder.features(audio)
        semantic, codes, commit = self.quantizer.forward_semantic(self.encoder.semantic_latent(x))
        states = self.distill(semantic).transpose(1, 2)
        return states, commit, perplexity(codes, self.config.codebook_size)

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """audio [B, 1, N] -> codes [B, K, N // hop]; streaming: one or more whole frames."""
        if self.is_streaming:  # channels-last from the audio to the codes
            with _plain_cpu_kernels:
                return self.quantizer.encode_step(self.encoder.step(audio), n_q)
        return self.quantizer.encode(self.encoder(audio), n_q)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, T] (K <= n_q) -> audio [B, 1, T * hop]. `pitch` [B, 4, T]: the input's
        pitch codes (`pitch_side.py`), which the harmonic decoder uses instead of the F0 and
        voicing it reads from the codes."""
        if self.config.decoder_codebooks:  # a voice decoder: the codebooks it was trained on
            codes = codes[:, :self.config.decoder_codebooks]
        f0 = None
        if pitch is not None:
            from .pitch_side import pitch_f0

            if not self.has_pitch_input:
                raise ValueError("pitch codes need a codec with the harmonic decoder")
            f0 = pitch_f0(pitch, self.config.hop // STFT_HOP).to(self.decoder.inp.weight.device)
        if self.is_streaming:
            with _plain_cpu_kernels:
                return self.decoder.step(self.quantizer.decode_step(codes), f0)
        return self.decoder(self.quantizer.decode(codes), f0)[0]

    @property
    def has_pitch_input(self) -> bool:  # whether decode() can take the input's pitch
        return self.config.vocoder == "harmonic"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def default_codec_path():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "assets" / "codec.safetensors"


def default_voice_path():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "assets" / "voice.safetensors"


VOICE_PART = "voice"  # a model file's extra["part"]: the decoding side alone (`export_codec`)


def decoding_side(name: str, codebooks: int) -> bool:
    """Whether weight `name` is one the decoder of codebooks 1..`codebooks` reads: the decoder,
    the quantizer's output projections and those codebooks' tables (not the encoder's side)."""
    if name.startswith("decoder."):
        return True
    if name.startswith(("quantizer.semantic_out.", "quantizer.semantic.codebooks.0.embed")):
        return True
    if name.startswith("quantizer.acoustic_out."):
        return codebooks > 1
    prefix = "quantizer.acoustic.codebooks."
    if name.startswith(prefix) and name.endswith(".embed"):
        return int(name[len(prefix):].split(".")[0]) < codebooks - 1
    return False


def load_codec(path=None, device: str = "cpu", base=None) -> Codec:
    """A codec from a model file or a training run folder; the shipped default when None.
    A voice file (`codec export --voice`) holds a decoding side alone: it comes back on the
    encoding side of the codec whose codes it decodes, `base` (default: the shipped one)."""
    from pathlib import Path

    from ..checkpoint import load_into, load_model
    from ..errors import VoxlmError

    if path is None and not default_codec_path().exists():
        raise VoxlmError("this copy of voxlm has no shipped codec yet",
                         "train one with recipes/codec.sh and pass --checkpoint runs/codec_base")
    path = Path(path) if path is not None else default_codec_path()
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, config, extra = load_model(path, "codec")
    config.setdefault("vocoder", "istft")  # files from before the harmonic vocoder
    try:
        codec = Codec(CodecConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in config.items()}))
    except TypeError as error:
        raise VoxlmError(f"{path} has a codec config this voxlm does not know ({error})",
                         "use the voxlm version that trained it") from None
    codec.codes_of = tuple(str(s) for s in extra.get("codes_of", []))
    if extra.get("part") == VOICE_PART:
        tensors = {**_encoding_side(path, codec, base), **tensors}
    load_into(codec, tensors, path, optional=("embed_sum", "usage", "idle"))  # training-only
    return codec.to(device).eval()


def _encoding_side(path, voice: Codec, base=None) -> dict:
    """The weights a voice file leaves out, from `base` (default: the shipped codec), which
    must be the codec whose codes it decodes."""
    from pathlib import Path

    from ..errors import VoxlmError
    from ..lm.tokenize_corpus import codec_code_ids

    base = Path(base) if base is not None else default_codec_path()
    if not base.is_file() or not codec_code_ids(base) & set(voice.codes_of):
        raise VoxlmError(f"{path} is a voice decoder for the codes of another codec than "
                         f"{base}", "use it with the codec it was trained on, or export the "
                         "whole codec run without --voice")
    own = load_codec(base)
    if replace(own.config, decoder_codebooks=0) != replace(voice.config, decoder_codebooks=0):
        raise VoxlmError(f"{path} is a voice decoder for a codec of another config than {base}",
                         "export the whole codec run without --voice")
    k = voice.config.decoder_codebooks
    return {name: t for name, t in own.state_dict().items() if not decoding_side(name, k)}
