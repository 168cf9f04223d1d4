r"""Sentence Attention Blocks for answer grounding.

Khoshsirat & Kambhamettu, "Sentence Attention Blocks for Answer Grounding", ICCV 2023,
https://arxiv.org/abs/2309.11593 (module as in github.com/khoshsirat/embedding-attention-blocks, ``model.py``).

The Sentence Attention Block re-weights the channels of a feature map by a gate computed from the question's
sentence embedding s:

.. math::
    a = \mathrm{softmax}_C\big(W_2\,\mathrm{ReLU}(\mathrm{LN}(W_1 s))\big),\qquad F'_{c,y,x} = F_{c,y,x}\, a_c

As message passing it is a star graph: one sentence node sends the C-vector ``a`` to every pixel, and the
update multiplies. :class:`SentenceAttention` is exactly that :class:`~graphattn.attention.GraphAttention`:
a constant score over a single key (so the receiver softmax gives weight 1), a :class:`ChannelGateMessage`
(the gate MLP, normalised over channels) and a :class:`GateUpdate` (element-wise product).

:class:`SABGroundingNet` is the paper's model at CPU scale: input InstanceNorm, a 4-scale CNN (the paper uses
EfficientNet-B7 features before every stride-2 block), one SAB per scale, top-down merge blocks
(1x1 conv + BN on the coarser map, bilinear upsample, add, ReLU), dropout 0.5 and a 1x1 classifier.

Gate options (``gate``): ``softmax`` (the paper), ``sigmoid`` (SE-style, the paper's ablation), ``concat``
(baseline: the sentence vector broadcast as extra channels and mixed by a 1x1 conv, no gating) and ``none``
(no question at all; a floor). Deviations: small CNN backbone, bag-of-words question encoder (see
:mod:`vision.datasets.shapes_grounding`), loss BCE + soft Dice (the paper's exact loss was not retrieved).

Letters in shape comments: B batch, C channels, HW pixels, E sentence width.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention, Message, Score, Update
from graphattn.registry import register_model
from vision.base import VisionData, VisionModel

__all__ = ["ConstantScore", "ChannelGateMessage", "GateUpdate", "SentenceAttention", "SABGroundingNet",
           "SABGrounding", "mask_iou", "GATES"]

GATES = ("softmax", "sigmoid", "concat", "none")


class ConstantScore(Score):
    """Score 0 on every edge (no query/key features): with a single key the receiver softmax gives 1."""

    def project(self, x_dst, x_src):
        return x_dst.new_zeros(*x_dst.shape[:-1], 1, 0), x_src.new_zeros(*x_src.shape[:-1], 1, 0)

    def edge(self, q, k, edge_index, edge_type=None):
        return q.new_zeros(edge_index.shape[1], 1)

    def dense(self, q, k):
        return torch.matmul(q, k.transpose(-1, -2))                              # zero-width: all zeros


class ChannelGateMessage(Message):
    """The SAB gate of a sentence: ``norm_C(W_2 ReLU(LN(W_1 s)))`` with ``norm`` softmax or sigmoid.

    Args:
        sentence_dim: E. channels: C. expansion: hidden width / E (default 4, the paper).
        channel_norm: ``"softmax"`` (gate sums to 1 over channels) or ``"sigmoid"``.

    Shapes: project: s (..., M, E) -> (..., M, 1, C).
    """

    heads = 1

    def __init__(self, sentence_dim: int, channels: int, expansion: int = 4, channel_norm: str = "softmax"):
        super().__init__()
        if channel_norm not in ("softmax", "sigmoid"):
            raise ValueError(f"channel_norm: expected 'softmax' or 'sigmoid', got {channel_norm!r}")
        self.value_dim, self.channel_norm = channels, channel_norm
        hidden = expansion * sentence_dim
        self.mlp = nn.Sequential(nn.Linear(sentence_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def gate(self, s: Tensor) -> Tensor:
        z = self.mlp(s)
        return torch.softmax(z, -1) if self.channel_norm == "softmax" else torch.sigmoid(z)

    def project(self, x_src):
        return self.gate(x_src).unsqueeze(-2)


class GateUpdate(Update):
    """``x * agg``: a FiLM with scale only."""

    def forward(self, x_dst, agg):
        return x_dst * agg


class SentenceAttention(nn.Module):
    """One Sentence Attention Block: a :class:`GraphAttention` from the sentence node to every pixel.

    Args:
        channels: C of the feature map. sentence_dim: E. expansion: MLP expansion (default 4).
        channel_norm: ``"softmax"`` (paper) or ``"sigmoid"`` (SE-style).

    Shapes: feat (B, C, H, W), sentence (B, E) -> (B, C, H, W).
    """

    def __init__(self, channels: int, sentence_dim: int, expansion: int = 4, channel_norm: str = "softmax"):
        super().__init__()
        self.attn = GraphAttention(channels, channels, heads=1, head_dim=channels, src_dim=sentence_dim,
                                   score=ConstantScore(),
                                   message=ChannelGateMessage(sentence_dim, channels, expansion, channel_norm),
                                   update=GateUpdate())

    def gate(self, sentence: Tensor) -> Tensor:
        """The channel gate (B, C)."""
        return self.attn.message.gate(sentence)

    def forward(self, feat: Tensor, sentence: Tensor) -> Tensor:
        B, C, H, W = feat.shape
        x = feat.flatten(2).transpose(1, 2)                                       # (B, HW, C)
        out = self.attn(x, x_src=sentence.unsqueeze(1))                           # one key: the sentence
        return out.transpose(1, 2).reshape(B, C, H, W)


class _Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Merge(nn.Module):
    """Top-down merge: 1x1 conv + BN on the coarse map to the fine channel count, upsample, add, ReLU."""

    def __init__(self, coarse: int, fine: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(coarse, fine, 1, bias=False), nn.BatchNorm2d(fine))

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        up = F.interpolate(self.proj(coarse), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(up + fine)


class _Concat(nn.Module):
    """Baseline conditioning: concatenate the broadcast sentence and mix with a 1x1 conv."""

    def __init__(self, channels: int, sentence_dim: int):
        super().__init__()
        self.mix = nn.Conv2d(channels + sentence_dim, channels, 1)

    def forward(self, feat: Tensor, sentence: Tensor) -> Tensor:
        s = sentence[:, :, None, None].expand(-1, -1, *feat.shape[-2:])
        return F.relu(self.mix(torch.cat([feat, s], 1)))


class SABGroundingNet(nn.Module):
    """Multi-scale CNN + a sentence-conditioning block per scale + top-down merge + 1x1 mask head.

    Args:
        sentence_dim: E. in_channels: image channels (default 3). channels: per-scale widths (default
        (16, 32, 64, 128)); scale 0 keeps the input resolution, each next one halves it.
        gate: one of ``GATES`` (default ``"softmax"``). expansion: SAB MLP expansion (default 4).
        dropout: before the classifier (default 0.5).

    Shapes: image (B, C_in, S, S), sentence (B, E) -> mask logits (B, 1, S, S).
    """

    def __init__(self, sentence_dim: int, in_channels: int = 3, channels=(16, 32, 64, 128), gate: str = "softmax",
                 expansion: int = 4, dropout: float = 0.5):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate: expected one of {GATES}, got {gate!r}")
        self.gate_kind = gate
        self.norm = nn.InstanceNorm2d(in_channels, affine=False)
        chans = [in_channels, *channels]
        self.stages = nn.ModuleList(_Stage(chans[i], chans[i + 1], 1 if i == 0 else 2) for i in range(len(channels)))
        if gate in ("softmax", "sigmoid"):
            self.cond = nn.ModuleList(SentenceAttention(c, sentence_dim, expansion, gate) for c in channels)
        elif gate == "concat":
            self.cond = nn.ModuleList(_Concat(c, sentence_dim) for c in channels)
        else:
            self.cond = None
        self.merges = nn.ModuleList(_Merge(channels[i + 1], channels[i]) for i in range(len(channels) - 1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels[0], 1, 1)

    def forward(self, image: Tensor, sentence: Tensor) -> Tensor:
        h = self.norm(image)
        feats = []
        for i, stage in enumerate(self.stages):
            h = stage(h)
            feats.append(h if self.cond is None else self.cond[i](h, sentence))
        out = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            out = self.merges[i](out, feats[i])
        return self.classifier(self.dropout(out))


def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image IoU of boolean masks (B, ...) -> (B,); an empty union counts as IoU 1."""
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    inter = (pred & target).sum(1).double()
    union = (pred | target).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


@register_model("SABGrounding", task="vision")
class SABGrounding(VisionModel):
    """Registered wrapper of :class:`SABGroundingNet` for ``shapes_grounding``-style batches
    ``((image, sentence), masks (B, 2, S, S))``. ``predict`` returns per-pixel two-class logits and labels so
    the trainer's accuracy / macro-F1 apply; the IoU metrics are in ``experiments/sab.py``.
    Config keys: ``vision/model/SABGrounding.yaml``."""

    def __init__(self, config: Any, data: VisionData) -> None:
        super().__init__(config, data)
        dim = data.meta.get("question_dim")
        if dim is None:
            raise ValueError("SABGrounding needs data.meta['question_dim'] (use the shapes_grounding dataset)")
        self.net = SABGroundingNet(int(dim), int(data.meta.get("in_channels", 3)), tuple(config["sab_channels"]),
                                   str(config["sab_gate"]), int(config["sab_expansion"]), float(config["sab_dropout"]))
        self.dice_weight = float(config["dice_weight"])

    def forward(self, x):
        image, sentence = x
        return self.net(image, sentence)

    def compute_loss(self, batch):
        x, masks = batch
        logits = self(x)
        target = masks[:, :1]
        loss = F.binary_cross_entropy_with_logits(logits, target) + self.dice_weight * dice_loss(logits, target)
        return loss, *self._pixels(logits.detach(), target)

    def predict(self, batch):
        x, masks = batch
        return self._pixels(self(x), masks[:, :1])

    @staticmethod
    def _pixels(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        z = logits.reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], 1), target.reshape(-1).long()
