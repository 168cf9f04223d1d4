r"""I-MPN: Inductive Message Passing Network for Efficient Human-in-the-Loop Annotation of Mobile Eye Tracking
Data (Le et al., 2024, https://arxiv.org/abs/2406.06239; Scientific Reports 2025).

Detections of one frame form a graph (``vision.graphs.object_graph``); an inductive, GraphSAGE-style network
whose messages carry signed spatial relations re-classifies every box (e.g. tablet-left vs tablet-right, which
look identical). With ``h^{(0)}_v = \mathrm{MLP}(x_v)``, for ``k = 1..K``:

.. math::
    m_v = \sum_{u \in N(v)} \alpha_{uv} \, \mathrm{ReLU}\big(W_k^{\phi} [h_u^{(k-1)} ; s_{uv}]\big), \qquad
    h_v^{(k)} = \mathrm{ReLU}\big(W_k [h_v^{(k-1)} ; m_v]\big)

with ``alpha_uv = 1 / deg(v)`` (mean aggregation, the paper's GraphSAGE family) or, as an extension that is
not in the paper, a softmax over ``v``'s incoming edges of ``<q_v, k_{uv}>`` (``aggregation: attention``).
Logits ``W_c h^{(K)}_v`` over the AOI classes; cross entropy on the labelled nodes.

Built on :class:`graphattn.attention.GraphAttention`: each edge ``u -> v`` becomes a sender that carries
``[h_u ; s_uv]`` (a bipartite edge -> node graph), the score is :class:`UniformScore` (every edge scores 0, so
the receiver softmax is ``1/deg(v)``) or the dot score, the message is :class:`RelationMessage` (``ReLU`` of
a linear map) and the update is GraphSAGE's concatenation (``update="graphsage"`` with slope 0, i.e. ReLU).
A box with no neighbour (a one-box frame) aggregates zeros.

Reconstructions (R, the paper's exact forms were not recoverable): node input ``[z ; p ; geometry]`` with
the geometry chosen by the dataset (``node_geometry``; absolute position is left out by default so that the
model has to use relations, the spec's viewpoint pitfall), relation features as in ``object_graph``, K = 2,
hidden 64, no L2 normalisation. The gaze point is not a graph node here: the frame's AOI is read out as the
predicted label of the box containing the gaze (:func:`frame_aoi`). Options for the baselines of the
experiments: ``num_layers: 0`` is the per-node MLP (appearance only, or with the absolute box when the dataset
gives it); ``edge_features: false`` is message passing without ``s_uv``.

Args (``vision/model/IMPN.yaml``): hidden_size (64), num_layers (2), aggregation ("mean"), edge_features
(true), dropout (0.1).

Shapes: batch = :class:`vision.graphs.object_graph.ObjectGraphBatch` with N boxes, E edges ->
logits (N, num_classes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.attention.messages import Message
from graphattn.attention.scores import Score
from graphattn.attention.updates import SAGEUpdate
from graphattn.registry import register_model
from vision.base import IGNORE_INDEX, VisionData, VisionModel
from vision.graphs.object_graph import EDGE_DIM, ObjectGraphBatch, fixated_box

__all__ = ["IMPN", "UniformScore", "RelationMessage", "frame_aoi"]


class UniformScore(Score):
    """Every edge scores 0: under the receiver softmax each incoming edge weighs ``1/deg(v)`` (mean)."""

    has_dense = False

    def __init__(self, heads: int = 1):
        super().__init__()
        self.heads = heads

    def project(self, x_dst: Tensor, x_src: Tensor) -> tuple[Tensor, Tensor]:
        return x_dst.new_zeros(x_dst.shape[0], self.heads, 0), x_src.new_zeros(x_src.shape[0], self.heads, 0)

    def edge(self, q: Tensor, k: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        return q.new_zeros(edge_index.shape[1], self.heads)


class RelationMessage(Message):
    """``phi([h_u ; s_uv]) = ReLU(W [h_u ; s_uv] + b)``, one head. Shapes: (E, src_dim) -> (E, 1, out_dim)."""

    def __init__(self, src_dim: int, out_dim: int):
        super().__init__()
        self.heads, self.value_dim = 1, out_dim
        self.linear = nn.Linear(src_dim, out_dim)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def project(self, x_src: Tensor) -> Tensor:
        return F.relu(self.linear(x_src)).unsqueeze(-2)


@register_model("IMPN", task="vision")
class IMPN(VisionModel):
    """I-MPN node classifier on per-frame object graphs; see the module docstring."""

    def __init__(self, config: Any, data: VisionData):
        super().__init__(config, data)
        if "in_features" not in data.meta:
            raise ValueError("IMPN needs meta['in_features'] from an object-graph dataset (gaze_objects, gaze_recording)")
        hidden, layers = int(config["hidden_size"]), int(config["num_layers"])
        if layers < 0 or hidden < 1:
            raise ValueError(f"num_layers must be >= 0 and hidden_size >= 1, got {layers} and {hidden}")
        self.aggregation = str(config["aggregation"])
        if self.aggregation not in ("mean", "attention"):
            raise ValueError(f"aggregation must be 'mean' or 'attention', got {self.aggregation!r}")
        self.edge_features = bool(config["edge_features"])
        self.dropout = float(config["dropout"])
        self.encoder = nn.Sequential(nn.Linear(int(data.meta["in_features"]), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        src_dim = hidden + (EDGE_DIM if self.edge_features else 0)
        self.layers = nn.ModuleList(
            GraphAttention(hidden, hidden, heads=1, head_dim=hidden, src_dim=src_dim,
                           score=UniformScore() if self.aggregation == "mean" else "dot", normalizer="dst_softmax",
                           message=RelationMessage(src_dim, hidden), update=SAGEUpdate(hidden, hidden, negative_slope=0.0))
            for _ in range(layers)
        )
        self.classifier = nn.Linear(hidden, data.num_classes)

    def forward(self, batch: ObjectGraphBatch) -> Tensor:
        h = self.encoder(batch.x)                                                 # (N, hidden)
        src, dst = batch.edge_index
        # each edge u -> v is a sender carrying [h_u ; s_uv]; it sends to v
        edge_nodes = torch.stack([torch.arange(src.numel(), device=src.device), dst])  # (2, E)
        for layer in self.layers:
            h = F.dropout(h, self.dropout, self.training)
            h_src = h.index_select(0, src)   # not h[src]: its backward accumulates in thread order (#24)
            x_src = h_src if not self.edge_features else torch.cat([h_src, batch.edge_attr], dim=-1)  # (E, src_dim)
            h = layer(h, edge_nodes, x_src=x_src)
        return self.classifier(F.dropout(h, self.dropout, self.training))

    def compute_loss(self, batch: ObjectGraphBatch) -> tuple[Tensor, Tensor, Tensor]:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch.y, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        return loss + self.aux_loss(), logits.detach(), batch.y

    def predict(self, batch: ObjectGraphBatch) -> tuple[Tensor, Tensor]:
        return self(batch), batch.y


def frame_aoi(logits: Tensor, batch: ObjectGraphBatch, background: int = 0) -> tuple[Tensor, Tensor]:
    """Predicted and true AOI of every frame: the label of the box containing the gaze, else ``background``.

    Shapes: logits (N, C) -> (B,), (B,).
    """
    pred, true = [], []
    pred_labels = logits.argmax(-1)
    for b in range(batch.gaze.shape[0]):
        nodes = (batch.batch == b).nonzero().squeeze(1)
        j = fixated_box(batch.boxes[nodes], batch.gaze[b])
        pred.append(background if j < 0 else int(pred_labels[nodes[j]]))
        true.append(background if j < 0 else int(batch.y[nodes[j]]))
    return torch.tensor(pred), torch.tensor(true)
