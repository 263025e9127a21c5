"""Residual vector quantization with EMA codebooks, k-means initialisation, dead-code restart
and quantizer dropout; a split form where codebook 1 is separate (semantic) as in Mimi.

Shapes: latents z [B, D, T]; codes [B, K, T] (int64, K codebooks); bits per frame K * log2(size).
Under DDP the EMA statistics are summed over processes and k-means / restarts see every
process's vectors, so one step equals the single-process step on the same global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..modules.streaming import StreamingModule


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x [N, D] over processes in rank order."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _sum(x: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x)
    return x


def kmeans(x: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """Plain k-means, x [N, D] -> centroids [k, D]; too few vectors are sampled with repeats."""
    index = torch.randperm(len(x))[:k] if len(x) >= k else torch.randint(len(x), (k,))
    centroids = x[index].clone()
    if len(x) < k:  # spread duplicates a little so they can separate
        centroids += 1e-3 * x.std() * torch.randn_like(centroids)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(-1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class Codebook(nn.Module):
    """One EMA vector quantizer. x [N, D] -> (quantized [N, D], codes [N])."""

    def __init__(self, size: int, dim: int, decay: float = 0.99, expected_uses: float = 5.0):
        super().__init__()
        # a code is dead when it went unused for as many steps as it should have taken to be
        # picked `expected_uses` times with uniform use
        self.size, self.decay, self.expected_uses = size, decay, expected_uses
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("usage", torch.zeros(size))  # EMA count of vectors per code
        self.register_buffer("idle", torch.zeros(size))  # steps since each code was last used
        self.register_buffer("initialized", torch.tensor(False))
        self._norms = (None, None)  # (version of embed, its squared norms) in eval mode

    def squared_norms(self) -> torch.Tensor:  # [size] |e|^2, kept between calls in eval mode
        if self.training:
            return self.embed.pow(2).sum(-1)
        version = (self.embed.data_ptr(), self.embed._version, self.embed.dtype)
        if self._norms[0] != version:  # embed was replaced or written since
            with torch.inference_mode(False), torch.no_grad():
                self._norms = (version, self.embed.pow(2).sum(-1))
        return self._norms[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [N, D] -> [N]
        # |x - e|^2 = |x|^2 - 2 x.e + |e|^2; |x|^2 does not change the argmin
        distances = torch.addmm(self.squared_norms(), x, self.embed.t(), alpha=-2)
        return distances.argmin(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, codes: torch.Tensor):
        if not bool(self.initialized):
            centroids = kmeans(_gather(x), self.size)
            if _distributed():
                dist.broadcast(centroids, 0)
            self.embed.copy_(centroids)
            self.embed_sum.copy_(centroids)
            self.usage.fill_(1.0)
            self.initialized.fill_(True)
            return
        counts = _sum(torch.bincount(codes, minlength=self.size).float())
        sums = _sum(torch.zeros_like(self.embed).index_add_(0, codes, x))
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.usage.sum()
        smoothed = (self.usage + 1e-5) / (total + self.size * 1e-5) * total  # Laplace smoothing
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        patience = max(2.0, self.expected_uses * self.size / max(1.0, float(counts.sum())))
        dead = self.idle > patience
        if dead.any():  # restart them on vectors of this batch
            pool = _gather(x)
            picks = pool[torch.randint(len(pool), (int(dead.sum()),))]
            if _distributed():
                dist.broadcast(picks, 0)
            mean_usage = self.usage.mean()
            self.embed[dead] = picks
            self.embed_sum[dead] = picks * mean_usage
            self.usage[dead] = mean_usage
            self.idle[dead] = 0

    def forward(self, x: torch.Tensor):
        if self.training:
            if not bool(self.initialized):
                self._update(x.detach().float(), None)
            codes = self.encode(x.detach())
            self._update(x.detach().float(), codes)
        else:
            codes = self.encode(x)
        return self.decode(codes), codes


@dataclass
class QuantizedResult:
    quantized: torch.Tensor  # [B, D, T] straight-through quantized latents
    codes: torch.Tensor  # [B, K, T]
    commit_loss: torch.Tensor  # scalar, mean squared distance latent -> codes
    semantic: torch.Tensor  # [B, D, T] the first (semantic) codebook's contribution alone
    perplexity: torch.Tensor  # [K] exp(entropy) of code usage in this batch


def perplexity(codes: torch.Tensor, size: int) -> torch.Tensor:
    """codes [B, K, T] -> [K] exp of the entropy of each codebook's usage."""
    out = []
    for k in range(codes.shape[1]):
        p = torch.bincount(codes[:, k].reshape(-1), minlength=size).float()
        p = p / p.sum().clamp(min=1)
        out.append(torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum()))
    return torch.stack(out)


class ResidualVQ(nn.Module):
    """Codebooks applied to the residual left by the previous ones. z [B, D, T]."""

    def __init__(self, n_q: int, size: int, dim: int, **codebook):
        super().__init__()
        self.codebooks = nn.ModuleList(Codebook(size, dim, **codebook) for _ in range(n_q))

    def forward(self, z: torch.Tensor, n_q: int):
        batch, dim, frames = z.shape
        residual = z.transpose(1, 2).reshape(-1, dim)
        total, codes, commit = torch.zeros_like(residual), [], z.new_zeros(())
        for codebook in self.codebooks[:n_q]:
            quantized, code = codebook(residual)
            commit = commit + F.mse_loss(residual, quantized.detach())
            residual = residual - quantized.detach()
            total = total + quantized
            codes.append(code.view(batch, frames))
        total = total.view(batch, frames, dim).transpose(1, 2)
        return total, torch.stack(codes, 1) if codes else z.new_zeros(batch, 0, frames).long(), commit

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [B, K, T] -> [B, D, T]
        out = 0
        for k in range(codes.shape[1]):
            out = out + self.codebooks[k].decode(codes[:, k]).transpose(1, 2)
        return out


@dataclass
class CodeTables:
    """What a streaming session of the quantizer reads every frame, made once at its start."""
    in_weight: torch.Tensor  # [2 * Dc, D] semantic then acoustic input projections
    in_bias: torch.Tensor  # [2 * Dc]
    embeds: list  # n_q x [size, Dc]: semantic codebook, then the acoustic ones
    embeds_t: list  # n_q x [Dc, size] the same, transposed views
    norms: list  # n_q x [size] their squared norms
    projected: torch.Tensor  # [n_q * size, D] every code through its output projection
    offsets: torch.Tensor  # [n_q] row of each codebook's first code in `projected`
    biases: torch.Tensor  # [2, D] output bias with the semantic codebook alone, with both
    batch_size: int


class SplitRVQ(StreamingModule):
    """Codebook 1 quantizes the latent alone (and is distilled from the semantic teacher);
    codebooks 2..K quantize the same latent residually; their outputs are summed (Mimi).

    `forward` is the training path; `encode` / `decode` the offline inference path, and
    `encode_step` / `decode_step` the streaming one: channels-last, reading tables made at the
    start of the stream (decoding is one lookup in the codes' output projections and a sum).
    `separate`: the input is [B, 2D, T], the acoustic latent then codebook 1's own (an encoder
    with semantic layers); otherwise both read the same latent [B, D, T]."""

    def __init__(self, dim: int, n_q: int, size: int, codebook_dim: int, separate: bool = False,
                 **codebook):
        super().__init__()
        self.n_q, self.size, self.dim, self.separate = n_q, size, dim, separate
        self.semantic_in = nn.Conv1d(dim, codebook_dim, 1)
        self.semantic_out = nn.Conv1d(codebook_dim, dim, 1)
        self.semantic = ResidualVQ(1, size, codebook_dim, **codebook)
        self.acoustic_in = nn.Conv1d(dim, codebook_dim, 1)
        self.acoustic_out = nn.Conv1d(codebook_dim, dim, 1)
        self.acoustic = ResidualVQ(n_q - 1, size, codebook_dim, **codebook)

    def _halves(self, z: torch.Tensor) -> tuple:
        """z [B, D or 2D, T] -> (codebook 1's latent, the acoustic latent), [B, D, T] each."""
        return (z[:, self.dim:], z[:, :self.dim]) if self.separate else (z, z)

    def forward_semantic(self, z: torch.Tensor) -> tuple:
        """Codebook 1 alone: its latent [B, D, T] -> (its output [B, D, T] with a straight-
        through gradient, codes [B, 1, T], commitment loss)."""
        sem_in = self.semantic_in(z)
        sem_q, sem_codes, sem_commit = self.semantic(sem_in, 1)
        return self.semantic_out(sem_in + (sem_q - sem_in).detach()), sem_codes, sem_commit

    def forward(self, z: torch.Tensor, n_q: int | None = None) -> QuantizedResult:
        n_q = self.n_q if n_q is None else n_q
        z_semantic, z = self._halves(z)
        semantic, sem_codes, sem_commit = self.forward_semantic(z_semantic)
        ac_in = self.acoustic_in(z)
        ac_q, ac_codes, ac_commit = self.acoustic(ac_in, n_q - 1)
        quantized = semantic
        if n_q > 1:
            quantized = quantized + self.acoustic_out(ac_in + (ac_q - ac_in).detach())
        codes = torch.cat([sem_codes, ac_codes], 1)
        return QuantizedResult(quantized, codes, sem_commit + ac_commit, semantic,
                               perplexity(codes, self.size))

    def _codebooks(self) -> list:
        return [*self.semantic.codebooks, *self.acoustic.codebooks]

    def encode(self, z: torch.Tensor, n_q: int | None = None, update: bool = True) -> torch.Tensor:
        """z [B, D, T] -> codes [B, K, T]: the codes of `forward` without its other outputs
        (in training mode with `update`, its EMA updates too)."""
        if self.training and update:  # the full step, EMA updates included
            return self(z, n_q).codes
        n_q = self.n_q if n_q is None else n_q
        batch, _, frames = z.shape
        z_semantic, z = self._halves(z)
        sem = self.semantic_in(z_semantic).transpose(1, 2).reshape(batch * frames, -1)  # [N, Dc]
        residual = self.acoustic_in(z).transpose(1, 2).reshape(batch * frames, -1)
        codes = [self.semantic.codebooks[0].encode(sem)]
        for codebook in self.acoustic.codebooks[: n_q - 1]:
            codes.append(codebook.encode(residual))
            residual = residual - codebook.decode(codes[-1])
        return torch.stack(codes, 1).view(batch, frames, n_q).transpose(1, 2).contiguous()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [B, K, T] -> [B, D, T]
        out = self.semantic_out(self.semantic.decode(codes[:, :1]))
        if codes.shape[1] > 1:
            out = out + self.acoustic_out(self.acoustic.decode(codes[:, 1:]))
        return out

    @torch.no_grad()
    def init_state(self, batch_size: int) -> CodeTables:
        """The tables of a stream, from the weights as they are at its start."""
        embeds = [codebook.embed for codebook in self._codebooks()]  # n_q x [size, Dc]
        sem_out, ac_out = self.semantic_out.weight[:, :, 0], self.acoustic_out.weight[:, :, 0]
        projected = torch.cat([F.linear(e, sem_out if k == 0 else ac_out)  # [size, D] each
                               for k, e in enumerate(embeds)])
        sem_bias = self.semantic_out.bias
        sem_in, ac_in = self.semantic_in.weight[:, :, 0], self.acoustic_in.weight[:, :, 0]
        if self.separate:  # each reads its own half of the input [2D]
            sem_in, ac_in = F.pad(sem_in, (self.dim, 0)), F.pad(ac_in, (0, self.dim))
        return CodeTables(
            in_weight=torch.cat([sem_in, ac_in]),
            in_bias=torch.cat([self.semantic_in.bias, self.acoustic_in.bias]),
            embeds=embeds, embeds_t=[e.t() for e in embeds],
            norms=[e.pow(2).sum(-1) for e in embeds], projected=projected,
            offsets=torch.arange(len(embeds), device=projected.device) * self.size,
            biases=torch.stack([sem_bias, sem_bias + self.acoustic_out.bias]),
            batch_size=batch_size)

    def encode_step(self, z: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Streaming: z [B, T, D] (channels-last) -> codes [B, K, T]; the same as `encode`."""
        n_q = self.n_q if n_q is None else n_q
        tables, (batch, frames, _) = self.state, z.shape
        x = F.linear(z.reshape(batch * frames, z.shape[-1]), tables.in_weight, tables.in_bias)
        sem, residual = x.chunk(2, dim=-1)  # [N, Dc] each
        codes = []
        for k in range(n_q):
            # the distances of Codebook.encode; the semantic codebook sees its own input
            distances = torch.addmm(tables.norms[k], sem if k == 0 else residual,
                                    tables.embeds_t[k], alpha=-2)  # [N, size]
            codes.append(distances.argmin(-1))  # [N]
            if 0 < k < n_q - 1:
                residual = residual - tables.embeds[k].index_select(0, codes[-1])
        return torch.stack(codes, 1).view(batch, frames, n_q).transpose(1, 2).contiguous()

    def decode_step(self, codes: torch.Tensor) -> torch.Tensor:
        """Streaming: codes [B, K, T] -> quantized latents [B, T, D] (channels-last)."""
        tables, n_q = self.state, codes.shape[1]
        rows = codes.transpose(1, 2) + tables.offsets[:n_q]  # [B, T, K] rows of `projected`
        return F.embedding(rows, tables.projected).sum(2) + tables.biases[min(n_q, 2) - 1]
