"""ISTA-Net: Interactive Spatiotemporal Token Attention Network for Skeleton-based General Interactive
Action Recognition (Wen, Tang, Pang, Ding, Liu; IROS 2023), https://arxiv.org/abs/2307.07469,
code https://github.com/Necolizer/ISTA-Net.

A clip ``x (N, C, T, J, E)`` is cut into Interactive Spatiotemporal Tokens
(:func:`vision.graphs.entity_token.tokenize`, window ``(Tw, Jw, Ew)``, strided frames), embedded by a 1x1x1
Conv3d + BN + LeakyReLU(0.1), mixed by a stack of Token Self-Attention blocks, mean-pooled and classified.

One TSA block on ``x (N, C, Tw, P, U)`` (P = Jw * Ew positions inside a token, U tokens); the attention runs
on the entity-token graph through :class:`graphattn.attention.GraphAttention` with

.. math::
    s_h(p \\to q) = \\frac{\\sum_{c, i, v} (W_1 (x + PE))_{h,c,i,v}[q]\\,(W_2 (x + PE))_{h,c,i,v}[p]}{d\\, T_w\\, P},
    \\qquad A_h(p \\to q) = \\alpha_h \\tanh s_h(p \\to q) + M_h[q, p]

(:class:`ISTAScore`; no softmax: normaliser ``"none"``), message = the raw block input ``x_p`` (identity
message, no value projection, no PE), heads concatenated (update ``"none"``). Then

``z = LReLU(BN(Conv3d_{(1,1,k_u)}(agg)) + res(x))`` (convolution along the token axis),
``z = LReLU(BN(Conv3d_1(z)) + res(x))`` (FFN; the residual is again ``res(x)``),
``out = LReLU(BN(Conv3d_{(k_t,1,1)}(z)) + res_TA(z))`` (convolution along within-token time).

Loss: cross-entropy with label smoothing on ``logits / temperature`` (the official loss). Entity
Rearrangement: with ``entity_rearrangement`` every training batch has its entity axis permuted per sample
(the official feeder does it in the data loader; here :meth:`ISTANet.compute_loss` does it, which is the
same augmentation).

Notes on faithfulness:
    * The official code names the sender's projection ``q`` and the receiver's ``k``; ``W_1``/``W_2`` above are
      the same single 1x1 conv split in two halves, as there.
    * With ``Ew = E`` (the paper's windows put all entities inside a token) every operation is pointwise
      along the within-token position axis and the head averages over it, so the network's output is
      EXACTLY invariant to permuting the entities (shared across all tokens) whatever its weights:
      Entity Rearrangement cannot change what such a model computes. It matters when entities are split
      across tokens (``Ew < E``), where the token order, the static adjacency ``M`` and the token-axis
      convolution see the entity order. ``entity_permutation_average`` (an extension, not in the paper)
      averages the logits over all entity permutations at every forward, which makes any window invariant.
    * For the same reason, with ``Ew = E`` the entities meet only through the attention map shared by all
      positions (its score sums entity-0 x entity-0 and entity-1 x entity-1 products, never entity-0 x
      entity-1) and the BatchNorm statistics. A relation that needs comparing the two entities' time courses
      (synchronous vs out-of-phase gestures, the ``interaction_idle_gestures`` variant of the synthetic
      task) stayed at chance in our runs, while entity tokens (``Ew = 1``) did better; see
      ``experiments/ista_net.py``.
    * Not implemented: the training-time crop/resize and random-rotation augmentation of the official
      feeders (the synthetic task draws a random rotation per clip; the NTU loader resamples whole clips).

Args (config keys, defaults in ``vision/model/ISTANet.yaml``):
    window: ``[Tw, Jw, Ew]`` ([10, 1, 2]).
    blocks: list of ``[in, out, qkv_dim]`` ([[16, 16, 8], [16, 32, 8], [32, 32, 8]]: the spec's configs
        scaled down for CPU; the paper uses 6-9 blocks of 64-256 channels, e.g. NTU
        [[64,64,16],[64,64,16],[64,128,32],[128,128,32],[128,256,64],[256,256,64] x 3], 6.22 M parameters).
    heads: H (3).
    kernel_size: ``[k_t, k_u]`` ([3, 5]; paper: [3, 5] NTU/H2O, [5, 5] SBU/Assembly101).
    use_pes: add the sinusoidal token positional code to the attention input (true).
    att_drop: dropout on A (0.0); dropout: before the classifier (0.0).
    label_smoothing (0.1), temperature (1.0).
    entity_rearrangement (true); entity_permutation_average (false).

Shapes:
    input ``(N, C, T, J, E)`` with C, T, J, E from ``data.meta`` (``num_channels``, ``num_frames``,
    ``num_joints``, ``num_entities``); output logits ``(N, num_classes)``.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention, IdentityMessage
from graphattn.attention.scores import Score
from graphattn.registry import register_model
from vision.base import IGNORE_INDEX, VisionData, VisionModel
from vision.datasets.skeleton import rearrange_entities
from vision.graphs.entity_token import token_layout, tokenize

__all__ = ["ISTANet", "ISTAScore", "TSABlock", "token_positional_encoding"]


def token_positional_encoding(num_tokens: int, channels: int) -> Tensor:
    """Sinusoidal code of the token index ``(U, C)`` (the same for every within-token entry, as the official
    ``PositionalEncoding``)."""
    pos = torch.arange(num_tokens, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(num_tokens, channels)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : channels // 2]
    return pe


class ISTAScore(Score):
    """ISTA-Net's token affinity ``alpha_h tanh(s_h(p -> q)) + M_h[q, p]`` (use with normaliser ``"none"``).

    Node features are whole tokens flattened as ``(Tw, P, C)`` (channels last). The score projects every
    within-token entry with one shared ``C -> 2 H d`` map (the official 1x1 Conv3d), after adding the
    positional code of the node's token index, and sums the products over channels, time and positions,
    divided by ``d * Tw * P``. ``M`` (init ``1 / U``) is a learned dense static adjacency between token
    indices, shared across samples; ``alpha`` (init 1) scales the content term per head.

    On the sparse path the nodes of a batch must be laid out sample-major, ``U`` per sample (node ``n`` is
    token ``n % U``), so ``M`` and the positional code can be looked up by local token index.

    Args:
        channels: C; heads: H; qkv_dim: d; tw: Tw; positions: P; num_tokens: U; use_pes.

    Shapes:
        project: ``(..., N, Tw*P*C)`` -> q, k ``(..., N, H, Tw*P*d)``; edge -> ``(E, H)``;
        dense: ``(B, H, U, Dh)`` x2 -> ``(B, H, U, U)`` indexed ``[dst, src]``.
    """

    def __init__(self, channels: int, heads: int, qkv_dim: int, tw: int, positions: int, num_tokens: int,
                 use_pes: bool = True):
        super().__init__()
        self.channels, self.heads, self.qkv_dim = channels, heads, qkv_dim
        self.entries, self.num_tokens = tw * positions, num_tokens
        self.scale = 1.0 / (qkv_dim * tw * positions)
        self.to_qk = nn.Linear(channels, 2 * heads * qkv_dim)
        self.alpha = nn.Parameter(torch.ones(heads))
        self.M = nn.Parameter(torch.empty(heads, num_tokens, num_tokens))           # [h, dst, src]
        if use_pes:
            self.register_buffer("pe", token_positional_encoding(num_tokens, channels), persistent=False)
        else:
            self.pe = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.to_qk.reset_parameters()
        nn.init.ones_(self.alpha)
        nn.init.constant_(self.M, 1.0 / self.num_tokens)

    def _local(self, n: int, device) -> Tensor:
        if n % self.num_tokens:
            raise ValueError(f"ISTAScore on the sparse path needs U={self.num_tokens} nodes per sample, got {n} nodes")
        return torch.arange(n, device=device) % self.num_tokens

    def _project(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(*lead, self.entries, self.channels)                           # (..., N, Tw*P, C)
        if self.pe is not None:
            pe = self.pe if x.dim() == 4 else self.pe[self._local(x.shape[0], x.device)]
            x = x + pe.unsqueeze(-2)                                                # same code for every entry
        qk = self.to_qk(x).unflatten(-1, (2, self.heads, self.qkv_dim))            # (..., N, Tw*P, 2, H, d)
        qk = qk.movedim(-4, -2)                                                     # (..., N, 2, H, Tw*P, d)
        return qk.flatten(-2)                                                       # (..., N, 2, H, Tw*P*d)

    def project(self, x_dst: Tensor, x_src: Tensor) -> tuple[Tensor, Tensor]:
        dst = self._project(x_dst)
        src = dst if x_src is x_dst else self._project(x_src)
        return dst[..., 1, :, :], src[..., 0, :, :]                                # receiver: official "k"

    def edge(self, q: Tensor, k: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        src, dst = edge_index
        s = (q[dst] * k[src]).sum(-1) * self.scale                                  # (E, H)
        m = self.M[:, dst % self.num_tokens, src % self.num_tokens].T               # (E, H)
        return torch.tanh(s) * self.alpha + m

    def dense(self, q: Tensor, k: Tensor) -> Tensor:
        if q.shape[-2] != self.num_tokens or k.shape[-2] != self.num_tokens:
            raise ValueError(f"ISTAScore expects {self.num_tokens} tokens, got {q.shape[-2]} queries and {k.shape[-2]} keys")
        s = torch.matmul(q, k.transpose(-1, -2)) * self.scale                       # (B, H, U, U)
        return torch.tanh(s) * self.alpha[:, None, None] + self.M


def _bn_conv(cin: int, cout: int, kernel=1, padding=0) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, padding=padding), nn.BatchNorm3d(cout))


class TSABlock(nn.Module):
    """Token Self-Attention block (see the module docstring).

    Args:
        in_channels, out_channels, qkv_dim, heads; tw: Tw; positions: P; num_tokens: U;
        kernel_size: ``(k_t, k_u)``; use_pes; att_drop.

    Shapes: ``(N, C_in, Tw, P, U)`` -> ``(N, C_out, Tw, P, U)``.
    """

    def __init__(self, in_channels: int, out_channels: int, qkv_dim: int, heads: int, tw: int, positions: int,
                 num_tokens: int, kernel_size: tuple[int, int] = (5, 5), use_pes: bool = True, att_drop: float = 0.0):
        super().__init__()
        k_t, k_u = kernel_size
        if k_t % 2 == 0 or k_u % 2 == 0:
            raise ValueError(f"kernel_size entries must be odd (same-size padding), got {tuple(kernel_size)}")
        self.in_channels, self.heads = in_channels, heads
        node_dim = tw * positions * in_channels
        score = ISTAScore(in_channels, heads, qkv_dim, tw, positions, num_tokens, use_pes)
        self.attention = GraphAttention(node_dim, heads * node_dim, heads, head_dim=node_dim, score=score,
                                        normalizer="none", message=IdentityMessage(node_dim, heads),
                                        update="none", dropout=att_drop)
        self.proj = _bn_conv(heads * in_channels, out_channels, (1, 1, k_u), (0, 0, k_u // 2))
        self.ffn = _bn_conv(out_channels, out_channels)
        self.ta = _bn_conv(out_channels, out_channels, (k_t, 1, 1), (k_t // 2, 0, 0))
        same = in_channels == out_channels
        self.residual = nn.Identity() if same else _bn_conv(in_channels, out_channels)
        self.residual_ta = nn.Identity() if same else _bn_conv(out_channels, out_channels)

    @staticmethod
    def to_nodes(x: Tensor) -> Tensor:
        """``(N, C, Tw, P, U)`` -> node features ``(N, U, Tw*P*C)``."""
        return x.permute(0, 4, 2, 3, 1).flatten(2)

    def forward(self, x: Tensor, return_attention: bool = False):
        n, c, tw, p, u = x.shape
        out = self.attention(self.to_nodes(x), return_attention=return_attention)
        agg, weights = out if return_attention else (out, None)
        agg = agg.view(n, u, self.heads, tw, p, c).permute(0, 2, 5, 3, 4, 1)     # (N, H, C, Tw, P, U)
        agg = agg.reshape(n, self.heads * c, tw, p, u)
        res = self.residual(x)
        z = F.leaky_relu(self.proj(agg) + res, 0.1)
        z = F.leaky_relu(self.ffn(z) + res, 0.1)
        out = F.leaky_relu(self.ta(z) + self.residual_ta(z), 0.1)
        return (out, weights) if return_attention else out


@register_model("ISTANet", task="vision")
class ISTANet(VisionModel):
    """ISTA-Net classifier on skeleton clips ``(N, C, T, J, E)``; see the module docstring for the formula,
    the config keys and the shapes."""

    def __init__(self, config: Any, data: VisionData):
        super().__init__(config, data)
        meta = data.meta
        missing = [k for k in ("num_channels", "num_frames", "num_joints", "num_entities") if k not in meta]
        if missing:
            raise ValueError(f"ISTANet needs skeleton data: data.meta lacks {missing} (use a skeleton dataset such as "
                             "skeleton-interaction or ntu-mutual26)")
        self.shape = (int(meta["num_frames"]), int(meta["num_joints"]), int(meta["num_entities"]))
        window = [int(w) for w in config["window"]]
        self.layout = token_layout(self.shape, window)
        self.window = tuple(window)
        blocks = [tuple(int(v) for v in b) for b in config["blocks"]]
        if not blocks or any(len(b) != 3 for b in blocks):
            raise ValueError(f"blocks: expected a non-empty list of [in, out, qkv_dim], got {config['blocks']!r}")
        for a, b in zip(blocks, blocks[1:]):
            if a[1] != b[0]:
                raise ValueError(f"blocks: output {a[1]} of {list(a)} does not match input {b[0]} of {list(b)}")
        kernel = tuple(int(k) for k in config["kernel_size"])
        if len(kernel) != 2:
            raise ValueError(f"kernel_size: expected [k_t, k_u], got {config['kernel_size']!r}")
        self.temperature = float(config["temperature"])
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        self.entity_rearrangement = bool(config["entity_rearrangement"])
        self.entity_permutation_average = bool(config["entity_permutation_average"])
        tw, positions, u = self.window[0], self.layout.positions, self.layout.num_tokens
        self.embed = nn.Sequential(nn.Conv3d(int(meta["num_channels"]), blocks[0][0], 1), nn.BatchNorm3d(blocks[0][0]),
                                   nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList(
            TSABlock(cin, cout, qkv, int(config["heads"]), tw, positions, u, kernel, bool(config["use_pes"]),
                     float(config["att_drop"])) for cin, cout, qkv in blocks)
        self.drop = nn.Dropout(float(config["dropout"]))
        self.fc = nn.Linear(blocks[-1][1], self.num_classes)
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def _check(self, x: Tensor) -> None:
        expected = (self.embed[0].in_channels, *self.shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"ISTANet expects x of shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def features(self, x: Tensor, return_attention: bool = False):
        """Token features after the last block ``(N, C_out, Tw, P, U)`` (and each block's weights)."""
        x = self.embed(tokenize(x, self.window))
        weights = []
        for block in self.blocks:
            if return_attention:
                x, w = block(x, return_attention=True)
                weights.append(w)
            else:
                x = block(x)
        return (x, weights) if return_attention else x

    def _logits(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.features(x).flatten(2).mean(-1)))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if not self.entity_permutation_average:
            return self._logits(x)
        perms = list(itertools.permutations(range(x.shape[-1])))
        return torch.stack([self._logits(x[..., list(p)]) for p in perms]).mean(0)

    def compute_loss(self, batch):
        x, y = batch
        if self.training and self.entity_rearrangement:
            x = rearrange_entities(x)
        out = self(x)
        loss = F.cross_entropy(out / self.temperature, y, label_smoothing=self.label_smoothing, ignore_index=IGNORE_INDEX)
        return loss + self.aux_loss(), out.detach(), y
