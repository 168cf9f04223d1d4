"""Trainable sequence mixers of the Dynamical Systems Framework, and the ``DSFMixer`` recall model.

Every mixer maps (B, T, D) -> (B, T, D) causally and exposes the same two readers:
``dsf(x)`` (the layer as a :class:`~sequence.dsf.system.DSF`: ``lam`` is the per-step decay, the "edge decay")
and ``materialize_operator(x)`` (``Phi``: (B, T, S) attention weights for the attention mixers, (B, T, S, D)
per-channel kernels for the S6 and qLSTM mixers).

Letters in shape comments: B batch, T tokens, S senders, D model width, n state expansion, V vocabulary.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import (DotProductScore, GraphAttention, KernelNormalizer, KernelScore, NoNorm,
                                 Projection, Score, ValueMessage, elu_feature_map)
from graphattn.registry import register_model

from .system import DSF, _LinearScan, linear_attention, normalized_attention, qlstm, selective_ssm

__all__ = ["VARIANTS", "ExpNormalizedScore", "AttentionMixer", "S6Mixer", "QLSTMMixer", "build_mixer",
           "RecallModel", "DSFMixer"]

VARIANTS = ("softmax", "linear", "normalized", "s6", "qlstm", "qlstm_s6")


def causal_mask(t: int, device=None) -> Tensor:
    """(T, S) boolean, True where ``j <= i`` (the complete causal graph)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


class ExpNormalizedScore(Score):
    r"""The score of the paper's normalized attention: ``q_i . k_j / exp(w^T x_i)`` (raw ``q, k``; the
    learned, query-side normaliser ``eta_i = exp(w^T x_i)`` is folded into the query), used with
    :class:`~graphattn.attention.NoNorm` so the weights are these scores on the causal graph.

    Shapes: project -> q (..., Nq, H, Dh), k (..., Nk, H, Dh); dense -> (B, H, Nq, Nk); edge -> (E, H).
    """

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, heads * head_dim)
        self.norm = nn.Linear(dim, heads)                                 # w^T x_i (+ bias), one per head

    def reset_parameters(self) -> None:
        for m in (self.q, self.k, self.norm):
            m.reset_parameters()

    def log_eta(self, x: Tensor) -> Tensor:
        return self.norm(x)                                               # (..., N, H)

    def project(self, x_dst, x_src):
        q = self.q(x_dst).unflatten(-1, (self.heads, self.head_dim))
        q = q * torch.exp(-self.log_eta(x_dst)).unsqueeze(-1)
        return q, self.k(x_src).unflatten(-1, (self.heads, self.head_dim))

    def edge(self, q, k, edge_index, edge_type=None):
        return (q.index_select(0, edge_index[1]) * k.index_select(0, edge_index[0])).sum(-1)

    def dense(self, q, k):
        return torch.matmul(q, k.transpose(-1, -2))


class AttentionMixer(nn.Module):
    r"""One causal attention head on the core :class:`~graphattn.attention.GraphAttention` (dense path,
    causal mask), with query/key width ``n`` (the state expansion) and value width ``D``:

    * ``softmax``: scaled dot product + softmax (the infinite-state limit);
    * ``linear``: ``phi = ELU + 1`` features and row-sum normalisation (the paper's ``lin_att``; state
      ``S_i in R^{n x D}``);
    * ``normalized``: raw ``q . k`` over the learned ``exp(w^T x_i)`` (the paper's proposal).

    Shapes: x (B, T, D) -> (B, T, D).
    """

    def __init__(self, variant: str, dim: int, state_expansion: int, eps: float = 1e-6):
        super().__init__()
        n = state_expansion
        if variant == "softmax":
            score, norm = DotProductScore(dim, dim, 1, n), "softmax"
        elif variant == "linear":
            score, norm = KernelScore(dim, dim, 1, n), KernelNormalizer(eps)
        elif variant == "normalized":
            score, norm = ExpNormalizedScore(dim, 1, n), NoNorm()
        else:
            raise ValueError(f"AttentionMixer variant must be softmax, linear or normalized, got {variant!r}")
        self.variant, self.eps = variant, eps
        self.attn = GraphAttention(dim, dim, 1, n, score=score, normalizer=norm,
                                   message=ValueMessage(dim, 1, dim), update=Projection(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, mask=causal_mask(x.shape[1], x.device))

    def dsf(self, x: Tensor) -> tuple[DSF, Tensor]:
        """``(system, v)``: the head as a DSF fed with its values ``v`` (B, T, D) (before the output
        projection). Softmax has no finite state and raises."""
        if self.variant == "softmax":
            raise ValueError("softmax attention has no finite-state DSF (its feature map is infinite-"
                             "dimensional); read materialize_operator() instead")
        q, k = self.attn.score.project(x, x)                              # (B, T, 1, n)
        v = self.attn.message.project(x)[:, :, 0]                         # (B, T, D)
        if self.variant == "linear":
            fq, fk = elu_feature_map(q[:, :, 0]), elu_feature_map(k[:, :, 0])
            # KernelNormalizer adds eps once per key: eta_i = phi(q_i).sum_j phi(k_j) + i * eps
            count = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)[:, None]
            system = linear_attention(fq, fk, v.shape[-1], normalize=True)
            eta = (fq * fk.cumsum(-2)).sum(-1, keepdim=True)
            system.c = system.c * (eta / (eta + count * self.eps)).unsqueeze(-1)
            return system, v
        raw_q = self.attn.score.q(x)                                      # before the exp normaliser
        log_eta = self.attn.score.log_eta(x)[..., 0]
        return normalized_attention(raw_q, k[:, :, 0], v.shape[-1], log_eta), v

    def materialize_operator(self, x: Tensor) -> Tensor:
        """The normalised attention weights ``Phi_ij`` (B, T, S) (every channel gets the same weight)."""
        _, weights = self.attn(x, mask=causal_mask(x.shape[1], x.device), return_attention=True)
        return weights.weights[:, 0]


class S6Mixer(nn.Module):
    r"""Selective SSM (S6, Gu & Dao 2023) in pure PyTorch, run through the DSF recurrence:
    ``u = W_in x``, ``Delta = softplus(W_D u + b)`` (D,), ``b_i = W_B u_i``, ``c_i = W_C u_i`` (n,),
    ``Lam_i = exp(-Delta_i a)`` with ``a = exp(a_log)`` (D, n) initialised S4D-real (``a_s = s + 1``),
    ``y = W_out (C_i h_i + D u_i)``.

    Deviation from Mamba: no short causal convolution and no SiLU output gate (the mixer alone, so the
    comparison with the attention mixers is like for like); ``W_D`` is full rank.

    Shapes: x (B, T, D) -> (B, T, D).
    """

    def __init__(self, dim: int, state_expansion: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        n = state_expansion
        self.inp = nn.Linear(dim, dim)
        self.dt = nn.Linear(dim, dim)
        self.bc = nn.Linear(dim, 2 * n, bias=False)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(dim, 1))
        self.skip = nn.Parameter(torch.ones(dim))
        self.out = nn.Linear(dim, dim)
        with torch.no_grad():                                             # Mamba's dt init: log-uniform
            dt = torch.exp(torch.rand(dim) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            self.dt.bias.copy_(dt + torch.log(-torch.expm1(-dt)))         # softplus^{-1}(dt)

    def dsf(self, x: Tensor) -> tuple[DSF, Tensor]:
        u = self.inp(x)                                                   # (B, T, D)
        delta = F.softplus(self.dt(u))
        b, c = self.bc(u).chunk(2, -1)                                    # (B, T, n) each
        return selective_ssm(delta, torch.exp(self.a_log), b, c, self.skip), u

    def forward(self, x: Tensor) -> Tensor:
        """The DSF recurrence of :meth:`dsf`, laid out for speed: time-major ``(T, B, D, n)`` states, the
        shared ``b_i``, ``c_i`` as an outer product and a batched matrix product (no per-channel copies)."""
        u = self.inp(x)                                                   # (B, T, D)
        delta = F.softplus(self.dt(u))
        b, c = self.bc(u).transpose(0, 1).contiguous().chunk(2, -1)       # (T, B, n) each
        delta_t = delta.transpose(0, 1).contiguous()                      # (T, B, D): small copies, so the
        lam = torch.exp(-delta_t.unsqueeze(-1) * torch.exp(self.a_log))   # big (T, B, D, n) tensors come
        drive = (delta_t * u.transpose(0, 1)).unsqueeze(-1) * b.unsqueeze(-2)   # out contiguous
        states = _LinearScan.apply(lam, drive)                            # (T, B, D, n)
        t, bsz, dim, n = states.shape
        y = torch.bmm(states.view(t * bsz, dim, n), c.reshape(t * bsz, n, 1)).view(t, bsz, dim)
        return self.out(y.transpose(0, 1) + self.skip * u)

    def materialize_operator(self, x: Tensor) -> Tensor:
        """Per-channel kernels ``Phi_ij`` (B, T, S, D) from the input ``u`` to the SSM's output (with D)."""
        system, _ = self.dsf(x)
        k = system.kernel()
        return k + torch.eye(x.shape[1], dtype=k.dtype, device=k.device)[:, :, None] * system.d.unsqueeze(-2)


class QLSTMMixer(nn.Module):
    r"""The quasi-LSTM of the paper (gates from the current input only; ``n = 1``, state width D):
    ``h_i = f_i * h_{i-1} + i_i * (W x_i)``, ``y_i = W_out (o_i * h_i)``, ``i, o = sigmoid(W_{i,o} x)``,
    and ``f_i = sigmoid(W_f x_i)`` (plain) or, with ``reversed_sigmoid``, the paper's S6-style
    ``f_i = sigmoid(-W_f x_i)^a = exp(-softplus(W_f x_i) a)`` with a learned ``a = softplus(.) >= 0`` per
    channel (initialised to 1).

    Shapes: x (B, T, D) -> (B, T, D).
    """

    def __init__(self, dim: int, reversed_sigmoid: bool = False):
        super().__init__()
        self.gates = nn.Linear(dim, 3 * dim)
        self.w = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.reversed_sigmoid = reversed_sigmoid
        # softplus(0.5413) = 1: the exponent starts at a = 1, i.e. f = sigmoid(-W_f x)
        self.a_raw = nn.Parameter(torch.full((dim,), 0.5413)) if reversed_sigmoid else None

    def dsf(self, x: Tensor) -> tuple[DSF, Tensor]:
        zf, zi, zo = self.gates(x).chunk(3, -1)
        exponent = F.softplus(self.a_raw) if self.reversed_sigmoid else None
        return qlstm(zf, torch.sigmoid(zi), torch.sigmoid(zo), self.w.weight, exponent), x

    def forward(self, x: Tensor) -> Tensor:
        system, u = self.dsf(x)
        return self.out(system.recurrent(u))

    def materialize_operator(self, x: Tensor) -> Tensor:
        """Per-channel kernels ``Phi_ij`` (B, T, S, D) from ``W x`` to the gated output."""
        system, _ = self.dsf(x)
        return system.kernel()


def build_mixer(variant: str, dim: int, state_expansion: int, eps: float = 1e-6) -> nn.Module:
    if variant in ("softmax", "linear", "normalized"):
        return AttentionMixer(variant, dim, state_expansion, eps)
    if variant == "s6":
        return S6Mixer(dim, state_expansion)
    if variant in ("qlstm", "qlstm_s6"):
        return QLSTMMixer(dim, reversed_sigmoid=variant == "qlstm_s6")
    raise ValueError(f"variant: unknown DSF mixer {variant!r}; expected one of {list(VARIANTS)}")


class RecallModel(nn.Module):
    """Base of the models of task ``mqar``: ``forward(tokens (B, T), keep=None) -> logits``: (B, T, V), or
    (K, V) at the K positions where the boolean ``keep`` (B, T) is True (the only ones with a loss)."""

    def forward(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class _Block(nn.Module):
    def __init__(self, variant: str, dim: int, n: int, eps: float, mlp_ratio: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = build_mixer(variant, dim, n, eps)
        self.mlp = None
        if mlp_ratio > 0:
            self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                     nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm(x))
        return x if self.mlp is None else x + self.mlp(x)


@register_model("DSFMixer", task="mqar")
class DSFMixer(RecallModel):
    r"""A Zoology-style two-layer recall model whose sequence mixer is any member of the DSF family.

    Sieber et al., "Understanding the differences in Foundation Models: Attention, State Space Models, and
    Recurrent Neural Networks", NeurIPS 2024, https://arxiv.org/abs/2405.15731

    ``token + learned position embedding -> num_layers x [x + mixer(LN(x)) (+ MLP)] -> LN -> vocabulary``,
    with the mixer chosen by ``variant`` (see :func:`build_mixer`): ``softmax | linear | normalized | s6 |
    qlstm | qlstm_s6``. ``state_expansion`` is ``n`` = ``d_qk`` of the attention mixers and ``d_state`` of
    S6; the qLSTM has ``n = 1`` by definition and ignores it.

    Deviation from the paper's runs: every variant uses the same block (no MLP by default, ``mlp_ratio``
    adds one to all), whereas the paper's normalized-attention config kept an MLP and S6 a Mamba block —
    the spec's "control for it". No attention dropout (the paper's runs use 0.1). The paper's S6 / qLSTM used
    CUDA scans (``mamba_ssm``, Triton); here both run on the pure-PyTorch DSF scan
    (:func:`~sequence.dsf.system.linear_scan`).

    Args (config keys, defaults in ``sequence/dsf/model/DSFMixer.yaml``): variant, state_expansion,
    d_model, num_layers, mlp_ratio, linear_eps. From the data: vocab_size, seq_len.

    Shapes: tokens (B, T) -> logits (B, T, V).
    """

    def __init__(self, config: Mapping[str, Any], data):
        super().__init__()
        variant = str(config["variant"])
        if variant not in VARIANTS:
            raise ValueError(f"variant: unknown DSF mixer {variant!r}; expected one of {list(VARIANTS)}")
        dim, n = int(config["d_model"]), int(config["state_expansion"])
        if n < 1 or dim < 1 or int(config["num_layers"]) < 1:
            raise ValueError(f"d_model, state_expansion and num_layers must be >= 1, got {dim}, {n}, "
                             f"{config['num_layers']}")
        self.variant, self.max_len = variant, int(data.seq_len)
        self.embed = nn.Embedding(data.vocab_size, dim)
        self.pos = nn.Embedding(self.max_len, dim)
        self.blocks = nn.ModuleList(_Block(variant, dim, n, float(config["linear_eps"]), int(config["mlp_ratio"]))
                                    for _ in range(int(config["num_layers"])))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, data.vocab_size)

    def hidden(self, tokens: Tensor) -> list[Tensor]:
        """The input of every mixer (after its LayerNorm): one (B, T, D) per layer."""
        x, inputs = self._embed(tokens), []
        for block in self.blocks:
            inputs.append(block.norm(x))
            x = block(x)
        return inputs

    def _embed(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be (B, T) with T <= {self.max_len}, got {tuple(tokens.shape)}")
        return self.embed(tokens) + self.pos.weight[: tokens.shape[1]]

    def forward(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        x = self._embed(tokens)
        for block in self.blocks:
            x = block(x)
        if keep is not None:
            x = x[keep]                                                   # (K, D): only the scored positions
        return self.head(self.norm(x))

    @torch.no_grad()
    def materialize_operator(self, tokens: Tensor) -> list[Tensor]:
        """``Phi`` of every layer's mixer on ``tokens`` (see the mixers' ``materialize_operator``)."""
        return [b.mixer.materialize_operator(h) for b, h in zip(self.blocks, self.hidden(tokens))]
