r"""IDNP — "Interest Dynamics Modeling using Generative Neural Processes for Sequential Recommendation"
(Du, Ye, Guo, Yu, Yao; WSDM 2023), https://arxiv.org/abs/2208.04600.

A user's interest is a function of time; each short time frame of interactions is a noisy observation
of it. A neural process learns, across users, a prior over such functions:

.. math::
    r_t &= \sum_{k,p} a_{k,p}\, h^k_{t,p},\quad a = \mathrm{softmax}_{k,p}\big(v^\top \tanh(W h^k_{t,p})\big)
        &&\text{(attentive multi-scale interest encoder, } h^k \text{ after dilated conv block } k)\\
    r_d(t^*) &= \sum_{t \in C,\ t < t^*} \mathrm{softmax}_t\!\Big(\tfrac{(W_q \tau(t^*))^\top W_k[\tau(t); r_t]}{\sqrt{d_h}}\Big)
        W_v [\tau(t); r_t]  &&\text{(deterministic path, frame -> query edges)}\\
    s_C &= \mathrm{mean}_{t \in C}\ \mathrm{MLP}([\tau(t); r_t]),\quad q(z\mid C) = \mathcal N(\mu(s_C), \sigma(s_C)^2)
        &&\text{(latent path)}\\
    h &= \mathrm{MLP}([\tau(t^*); \tau'(t^* - t_{last}); r_{last}; r_d; z; e_u]) + r_{last},\quad
        p(i \mid t^*) = \mathrm{softmax}_i(h^\top e_i)
        &&\text{(interest decoder)}\\
    \mathcal L &= -\log p(i_{t^*} \mid t^*, C, z),\ z \sim q(z \mid C, D)
        \;+\; \beta_{step}\, D\big(q(z\mid C, D), q(z\mid C)\big)

with :math:`D` the closed-form Wasserstein-2 distance of diagonal Gaussians
:math:`\|\mu_1-\mu_2\|^2 + \|\sigma_1-\sigma_2\|^2` (default) or the KL divergence, and :math:`\beta` annealed
linearly from 0 to ``reg_weight`` over ``anneal_steps`` optimiser steps (against posterior collapse).

Training: each user's window is cut into frames (:func:`recsys.sequential.data.build_frames`); a random
prefix of the frames is the context set C, the target set D is every frame (D includes C). Every item of
the window is a target point at its own time; it sees the context frames that end before it, so targets
inside C are predicted from the frames before them and targets after C must extrapolate across the gap.
``z`` is sampled from the posterior q(z | C, D) in training; evaluation uses every frame as context, the
prior mean of q(z | C), and queries the time of the held-out interaction.

Reconstructed parts (marked (R) in the spec; implemented as documented options):

- frame length (``frame_len``), dilation rates (``dilations``), kernel size (``kernel_size``);
- keys and values of the deterministic path are both ``[tau(t); r_t]`` (the layer projects senders once
  for keys and values; the spec's values ``W_v r_t`` are a special case);
- the query representation ``r_q`` is ``[tau(t*); tau'(t* - t_last); r_last]``: the query time, the gap to
  the last visible context frame and (``query_last_frame``, the spec's "and/or the representation of the
  last observed frame") that frame's interest ``r_last``, which also enters the decoder's output as a
  residual ``h = MLP(...) + r_last`` (``LN(MLP(...))`` without it), so the decoder predicts how the
  interest moved since the last frame. Without it the recency signal reaches the decoder only through an
  MLP, and on a noisier setting of the synthetic generator (phase noise 0.25) training was slower and
  worse (validation HR@10 about 0.29 vs SASRec's 0.37 after 30 epochs);
- the user embedding enters the decoder MLP instead of being concatenated after it (``use_user_embedding``);
- likelihood: full softmax over all items (no sampled negatives);
- regulariser ``regularizer: wasserstein | kl`` with linear annealing. Note that W2 is a weak information
  bound: with ``sigma`` near its floor (0.1) the posterior can move its mean far in units of ``sigma`` at a
  small W2 cost, so it can carry target information that the prior cannot; KL charges for that;
- predictive variance (:meth:`IDNP.predictive_variance`): the variance of the normalised embedding
  ``e_i / |e_i|`` of the predicted item under the model's predictive distribution, i.e. the items drawn
  from ``p(i | t*, C, z)`` with ``z ~ q(z | C)`` (law of total variance over the z samples). An explicit
  Gaussian observation head on item embeddings was tried and dropped: through the shared input
  embeddings it collapsed them so the observation became trivially predictable.
- time encoding: sinusoids with learnable frequencies (Time2Vec-style) initialised on a geometric grid,
  so a periodic drift can be matched exactly.

Args (config keys, defaults in ``recsys/sequential/model/IDNP.yaml``):
    embedding_size (64), time_dim (32), frame_len (3), dilations ([1, 2]), kernel_size (2), heads (2),
    latent_dim (32), dropout (0.1), attn_dropout (0.1), regularizer ("wasserstein"), reg_weight (1.0),
    anneal_steps (300), use_user_embedding (true), query_last_frame (true), det_path ("dense" | "sparse"),
    max_period (1000.0).

Shapes:
    training batch items (B, L+1) -> T = ceil((L+1)/frame_len) frames, Q = L+1 queries;
    full_sort_predict: (B, n_items); predictive_variance: query_time (B, G) -> (B, G).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from .base import SequentialRecommender
from .data import SeqData, build_frames
from .graphs import context_target_graph, context_target_mask

__all__ = ["IDNP", "TimeEncoding", "AttentiveInterestEncoder", "wasserstein2", "gaussian_kl"]


class TimeEncoding(nn.Module):
    """``tau(t) = [sin(w t + b); cos(w t + b)]`` with learnable ``w`` (init ``max_period^(-i/half)``) and ``b``.

    Shapes: t (...) -> (..., dim).
    """

    def __init__(self, dim: int, max_period: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time_dim must be even, got {dim}")
        self.half, self.max_period = dim // 2, float(max_period)
        self.freq = nn.Parameter(torch.empty(self.half))
        self.phase = nn.Parameter(torch.empty(self.half))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.freq.copy_(self.max_period ** (-torch.arange(self.half, dtype=torch.float32) / self.half))
            self.phase.zero_()

    def forward(self, t: Tensor) -> Tensor:
        angle = t.unsqueeze(-1) * self.freq + self.phase
        return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


class AttentiveInterestEncoder(nn.Module):
    """Multi-scale frame encoder: NextItNet-style residual causal dilated convolutions, then attention over
    (scale, position) pairs pooled into one vector per frame by an additive-score :class:`GraphAttention`
    from a learned query (item_event -> frame edges, softmax over the frame's incoming edges).

    Shapes: items_emb (N, w, d), item_valid (N, w) -> (N, d); frames without items give zeros.
    """

    def __init__(self, dim: int, dilations: list[int], kernel_size: int = 2, dropout: float = 0.1):
        super().__init__()
        self.dilations, self.kernel_size = [int(x) for x in dilations], int(kernel_size)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, self.kernel_size, dilation=dl) for dl in self.dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.dilations)
        self.drop = nn.Dropout(dropout)
        self.scale_emb = nn.Parameter(torch.zeros(len(self.dilations) + 1, dim))
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.pool = GraphAttention(dim, dim, heads=1, score="additive", message="identity", update="none")
        # frame interests at the scale of the time encodings (else time dominates the decoder's input)
        self.norm_out = nn.LayerNorm(dim)
        nn.init.normal_(self.query, std=0.02)
        nn.init.normal_(self.scale_emb, std=0.02)

    def forward(self, x: Tensor, item_valid: Tensor) -> Tensor:
        scales = [x]
        h = x
        for conv, norm, dl in zip(self.convs, self.norms, self.dilations):
            inp = F.pad(norm(h).transpose(1, 2), ((self.kernel_size - 1) * dl, 0))      # (N, d, w + pad)
            h = h + self.drop(F.relu(conv(inp))).transpose(1, 2)                       # (N, w, d)
            h = h * item_valid.unsqueeze(-1)
            scales.append(h)
        src = torch.stack(scales, 1) + self.scale_emb[None, :, None, :]               # (N, K+1, w, d)
        src = src.flatten(1, 2)                                                        # (N, (K+1) w, d)
        keep = item_valid.repeat(1, len(scales))                                       # (N, (K+1) w)
        has = item_valid.any(1)
        keep = keep | ~has[:, None]          # empty frames attend anywhere, then are zeroed
        out = self.pool(self.query.expand(x.shape[0], 1, -1), x_src=src, key_padding_mask=keep)
        return self.norm_out(out.squeeze(1)) * has[:, None]


def wasserstein2(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance of diagonal Gaussians, summed over the last dim."""
    return ((mu1 - mu2) ** 2 + (sigma1 - sigma2) ** 2).sum(-1)


def gaussian_kl(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """``KL(N(mu1, sigma1^2) || N(mu2, sigma2^2))`` of diagonal Gaussians, summed over the last dim."""
    var1, var2 = sigma1 ** 2, sigma2 ** 2
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1.0).sum(-1)


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


@register_model("IDNP", task="sequential")
class IDNP(SequentialRecommender):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: SeqData):
        super().__init__(config, data)
        d, td, zd = int(config["embedding_size"]), int(config["time_dim"]), int(config["latent_dim"])
        self.dim, self.frame_len = d, int(config["frame_len"])
        self.regularizer = str(config["regularizer"])
        if self.regularizer not in ("wasserstein", "kl"):
            raise ValueError(f"regularizer: expected 'wasserstein' or 'kl', got {self.regularizer!r}")
        self.det_path = str(config["det_path"])
        if self.det_path not in ("dense", "sparse"):
            raise ValueError(f"det_path: expected 'dense' or 'sparse', got {self.det_path!r}")
        self.reg_weight, self.anneal_steps = float(config["reg_weight"]), int(config["anneal_steps"])
        dropout = float(config["dropout"])

        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.pad)
        self.user_emb = nn.Embedding(self.n_users, d) if config["use_user_embedding"] else None
        self.time_enc = TimeEncoding(td, float(config["max_period"]))
        self.gap_enc = TimeEncoding(td, float(config["max_period"]))
        self.encoder = AttentiveInterestEncoder(d, list(config["dilations"]), int(config["kernel_size"]), dropout)
        self.emb_drop = nn.Dropout(dropout)
        self.query_last_frame = bool(config["query_last_frame"])
        self.deterministic = GraphAttention(td, d, heads=int(config["heads"]), src_dim=td + d,
                                            dropout=float(config["attn_dropout"]))
        self.latent_enc = _mlp(td + d, d, d, dropout)
        self.latent_mu = nn.Linear(d, zd)
        self.latent_sigma = nn.Linear(d, zd)
        dec_in = 2 * td + d + zd + (d if self.user_emb is not None else 0) + (d if self.query_last_frame else 0)
        self.decoder = nn.Sequential(nn.Linear(dec_in, 2 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        # without r_last, a final LayerNorm keeps the interest at a scale where the full softmax learns quickly
        self.dec_norm = None if self.query_last_frame else nn.LayerNorm(d)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        nn.init.normal_(self.item_emb.weight, std=0.1)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=0.1)

    # ------------------------------------------------------------------------------------- pieces

    def encode_frames(self, items: Tensor, times: Tensor, lengths: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Frames of the sequences and their keys ``[tau(t); r_t]`` ``(B, T, time_dim + d)``."""
        fr = build_frames(items, times, lengths, self.frame_len, self.pad)
        b, t, w = fr["items"].shape
        x = self.emb_drop(self.item_emb(fr["items"])).view(b * t, w, -1)
        r = self.encoder(x, fr["item_valid"].view(b * t, w)).view(b, t, -1)        # (B, T, d)
        keys = torch.cat([self.time_enc(fr["time"]), r], -1) * fr["valid"].unsqueeze(-1)
        return fr, keys

    def latent(self, keys: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z | frames in members)``: mean of ``MLP(keys)`` over the members, Gaussian head.

        Shapes: keys (B, T, Dk), members (B, T) bool -> mu, sigma (B, latent_dim).
        """
        s = self.latent_enc(keys) * members.unsqueeze(-1)
        s = s.sum(1) / members.sum(1, keepdim=True).clamp_min(1)
        return self.latent_mu(s), 0.1 + 0.9 * torch.sigmoid(self.latent_sigma(s))

    def deterministic_path(self, query_time: Tensor, keys: Tensor, mask: Tensor, frame_time: Tensor | None = None,
                           path: str | None = None) -> Tensor:
        """Cross-attention from query times to visible context frames: ``(B, Q, d)``.

        ``path="dense"`` uses the layer's dense path with the ``(B, Q, T)`` mask; ``"sparse"`` builds the
        typed graph (:func:`context_target_graph`) and runs the same layer on its frame -> query edges.
        """
        path = path or self.det_path
        q = self.time_enc(query_time)                                                  # (B, Q, td)
        if path == "dense":
            return self.deterministic(q, x_src=keys, mask=mask)
        b, n_q, n_t = mask.shape
        graph = context_target_graph(frame_time if frame_time is not None else keys.new_zeros(b, n_t), mask, query_time)
        edge_index = graph["frame", "informs", "query"].edge_index
        out = self.deterministic(q.reshape(b * n_q, -1), edge_index, x_src=keys.reshape(b * n_t, -1))
        return out.view(b, n_q, -1)

    def decode(self, query_time: Tensor, mask: Tensor, keys: Tensor, frame_time: Tensor, z: Tensor,
               users: Tensor) -> Tensor:
        """Interest ``h`` at each query: ``(B, Q, d)`` (z: ``(B, zd)`` or ``(B, Q, zd)``)."""
        r_d = self.deterministic_path(query_time, keys, mask, frame_time)
        last = frame_time[:, None, :].expand_as(mask).masked_fill(~mask, float("-inf")).amax(-1)  # (B, Q)
        gap = torch.where(torch.isfinite(last), query_time - last, torch.zeros_like(query_time))
        parts = [self.time_enc(query_time), self.gap_enc(gap), r_d,
                 z if z.dim() == 3 else z[:, None, :].expand(-1, query_time.shape[1], -1)]
        r_last = None
        if self.query_last_frame:
            slot = torch.arange(mask.shape[-1], device=mask.device)
            last_slot = torch.where(mask, slot, -1).amax(-1)                               # (B, Q), -1: none
            r_last = torch.gather(keys[..., -self.dim:], 1,
                                  last_slot.clamp_min(0)[..., None].expand(-1, -1, self.dim))
            r_last = r_last * (last_slot >= 0)[..., None]
            parts.append(r_last)
        if self.user_emb is not None:
            parts.append(self.user_emb(users)[:, None, :].expand(-1, query_time.shape[1], -1))
        h = self.decoder(torch.cat(parts, -1))
        # with r_last the decoder predicts a change of the last observed interest (a residual, as in SASRec);
        # no norm after it, so the interest's length (the softmax's confidence) can depend on the gap
        return self.dec_norm(h) if r_last is None else h + r_last

    def beta(self) -> float:
        if self.anneal_steps <= 0:
            return self.reg_weight
        return self.reg_weight * min(1.0, float(self.step) / self.anneal_steps)

    # ------------------------------------------------------------------------------------- training

    def calculate_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        items, times, lengths, users = batch["items"], batch["times"], batch["lengths"], batch["users"]
        fr, keys = self.encode_frames(items, times, lengths)
        b, n_t = fr["valid"].shape
        n_valid = fr["valid"].sum(1)
        first = n_t - n_valid
        # context = frame slots [first, cut): at least one context frame and one frame outside it
        span = (n_valid - 1).clamp_min(1)
        cut = first + 1 + (torch.rand(b, device=items.device) * span).long().clamp_max(span - 1)
        cut = torch.where(n_valid >= 2, cut, torch.full_like(cut, n_t))
        slot = torch.arange(n_t, device=items.device)
        context = fr["valid"] & (slot[None] < cut[:, None])

        n_q = items.shape[1]
        query_pos = torch.arange(n_q, device=items.device)[None].expand(b, -1)
        query_valid = query_pos < lengths[:, None]
        mask = context_target_mask(fr["valid"], fr["end"], query_pos, cut, query_valid)  # (B, Q, T)
        has = mask.any(-1)                          # targets with at least one visible context frame

        mu_c, sig_c = self.latent(keys, context)
        mu_all, sig_all = self.latent(keys, fr["valid"])
        z = mu_all + sig_all * torch.randn_like(sig_all)
        h = self.decode(times, mask, keys, fr["time"], z, users)                       # (B, Q, d)

        targets = items[has]
        logits = h[has] @ self.item_emb.weight[:self.n_items].T
        ce = F.cross_entropy(logits, targets) if targets.numel() else h.sum() * 0.0
        dist = wasserstein2 if self.regularizer == "wasserstein" else gaussian_kl
        reg = dist(mu_all, sig_all, mu_c, sig_c).mean()
        beta = self.beta()
        if self.training:
            self.step += 1
        loss = ce + beta * reg
        return loss, {"ce": ce.item(), "reg": reg.item(), "beta": beta}

    # ------------------------------------------------------------------------------------- inference

    def _context(self, batch: dict[str, Tensor], query_time: Tensor):
        items, times, lengths = batch["items"], batch["times"], batch["lengths"]
        fr, keys = self.encode_frames(items, times, lengths)
        b = items.shape[0]
        query_pos = lengths[:, None].expand(b, query_time.shape[1])
        mask = context_target_mask(fr["valid"], fr["end"], query_pos)
        mu, sigma = self.latent(keys, fr["valid"])
        return fr, keys, mask, mu, sigma

    def full_sort_predict(self, batch: dict[str, Tensor]) -> Tensor:
        query_time = batch["target_time"][:, None]
        fr, keys, mask, mu, _ = self._context(batch, query_time)
        h = self.decode(query_time, mask, keys, fr["time"], mu, batch["users"])[:, 0]  # (B, d)
        return h @ self.item_emb.weight[:self.n_items].T

    @torch.no_grad()
    def predictive_variance(self, batch: dict[str, Tensor], query_time: Tensor, n_samples: int = 32) -> Tensor:
        """Variance of the predicted item's normalised embedding at each query time, ``(B, G)``.

        With ``u_i = e_i / |e_i|``, ``p_z = p(i | t*, C, z)`` and ``z ~ q(z | C)`` (every frame as context):
        ``E_z[sum_i p_z(i) |u_i - m_z|^2] + E_z |m_z - E_z m_z|^2`` where ``m_z = sum_i p_z(i) u_i`` (averaged
        over the ``d`` dimensions).
        """
        fr, keys, mask, mu, sigma = self._context(batch, query_time)
        unit = F.normalize(self.item_emb.weight[:self.n_items], dim=-1)                # (I, d)
        means, within = [], []
        for _ in range(n_samples):
            z = mu + sigma * torch.randn_like(sigma)
            h = self.decode(query_time, mask, keys, fr["time"], z, batch["users"])     # (B, G, d)
            p = torch.softmax(h @ self.item_emb.weight[:self.n_items].T, -1)          # (B, G, I)
            m = p @ unit                                                               # (B, G, d)
            within.append(1.0 - (m * m).sum(-1))        # sum_i p_i |u_i|^2 - |m|^2 with |u_i| = 1
            means.append(m)
        means = torch.stack(means)                                                     # (S, B, G, d)
        total = torch.stack(within).mean(0) + means.var(0, unbiased=False).sum(-1)
        return total / unit.shape[1]
