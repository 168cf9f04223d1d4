"""KGAT: knowledge-graph attention network for recommendation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention, RelationalScore
from graphattn.graphs import collaborative_kg
from graphattn.ops import FixedAdjacency, dropout, receptive_fields, typed_linear
from graphattn.registry import register_model
from graphattn.training import build_optimizer

from ..sampler import BPRSampler, KGSampler
from .base import RecModel, bpr_loss, l2_half


@register_model("KGAT", task="recsys")
class KGAT(RecModel):
    r"""KGAT: Knowledge Graph Attention Network for Recommendation (Wang, He, Cao, Liu, Chua; KDD 2019,
    https://arxiv.org/abs/1905.07854), faithful to the authors' TensorFlow code.

    Users and entities (items first) share one embedding table over the collaborative knowledge graph (CKG)
    built by :func:`graphattn.graphs.collaborative_kg` (interact edges, every KG relation and its inverse,
    ``2R + 2`` relation ids). Each propagation layer is a :class:`~graphattn.attention.GraphAttention` with

    * score: the relational score ``pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r)``, one
      :class:`~graphattn.attention.RelationalScore` shared by all layers and by the TransR loss;
    * normaliser: softmax over ALL incoming edges of a head, across relation types;
    * message: the raw tail embedding ``e_t``;
    * update: the aggregator (``bi``: ``LeakyReLU(W1(e_h + e_N)) + LeakyReLU(W2(e_h * e_N))``, ``gcn``,
      ``graphsage``), LeakyReLU slope 0.2 (TensorFlow's default), bias on every W.

    Then message dropout and a row-wise L2 normalisation of each layer's output (layer 0 is not normalised);
    the readout concatenates layers 0..L and scores ``y(u, i) = e_u*^T e_i*``. Training alternates a CF phase
    (BPR loss + ``reg_weight[0]`` x L2 of the batch's final embeddings / batch size) and a KG phase (TransR:
    ``softplus(g(h,r,t) - g(h,r,t'))`` with ``g = ||W_r e_h + e_r - W_r e_t||^2``, corrupted tails drawn from
    all nodes, + ``reg_weight[1]`` x L2 of the projections / batch size), with separate Adam optimizers.

    Official behaviours kept (see ``shared/papers/kgat.md``): ``attention_mode: fixed`` recomputes the attention
    matrix once per epoch, after the KG phase, from the layer-0 embeddings, and uses it as a constant for
    every layer in the CF phase (no CF gradient flows into it); before the first refresh the matrix is
    ``sum_r D_r^{-1} A_r`` (per-relation row-normalised adjacency). ``attention_mode: end_to_end`` recomputes
    the attention from the current layer-0 embeddings in every CF step with gradient (the paper's reading).
    ``use_attention: false`` keeps the initial per-relation normalised adjacency throughout (the paper's
    "w/o Att" ablation); ``use_kge: false`` drops the TransR phase (the paper's "w/o KGE", official
    ``--use_kge False``). The relation parameters ``W_r, e_r`` of the attention are trained only by TransR in
    ``fixed`` mode and also by the CF loss in ``end_to_end`` mode; with ``end_to_end`` and ``use_kge: false`` the
    attention is learnt from the recommendation loss alone. On the planted-knowledge data only that last setting
    makes the attention favour the informative relation (``experiments/kgat_planted.py``): the TransR-trained score
    ranks relations by the scale of their projections, which TransR's unconstrained loss grows for the relations
    it fits worst (``experiments/kgat_attention_diagnosis.py``, ``docs/results/kgat_attention.md``, issue #20).

    Deviations: the GraphSage aggregator normalises the layer output like the others (the official code
    normalises the pre-linear concatenation, a bug); the authors' pretrained ``mf.npz`` files are not published,
    so ``pretrain: <BPRMF run folder>`` (off by default) initialises users and items from one of our BPRMF runs
    instead; node dropout, parsed but unused upstream, is absent.

    Args (config keys): ``embedding_size`` 64, ``kg_embedding_size`` 64, ``layers`` [64, 32, 16],
    ``aggregator`` bi, ``mess_dropout`` [0.1, 0.1, 0.1], ``reg_weight`` [1e-5, 1e-5], ``kg_batch_size`` 0
    (official rule), ``attention_mode`` fixed, ``use_attention`` true, ``use_kge`` true, ``negative_slope`` 0.2,
    ``pretrain`` null.

    Shapes: node embeddings (n_entities + n_users, d); readout (n, d + sum(layers)).
    """

    phases = ("cf", "kg")
    restrict_below = 0.5   # batch propagation: layers whose receptive field is smaller than this share are sliced

    uses_kg = True

    def __init__(self, config, data):
        super().__init__(config, data)
        d, k = config["embedding_size"], config["kg_embedding_size"]
        sizes = [d] + list(config["layers"])
        drop = list(config["mess_dropout"])
        if len(drop) != len(sizes) - 1:
            raise ValueError(f"mess_dropout needs one value per layer ({len(sizes) - 1}), got {drop}")
        if config["attention_mode"] not in ("fixed", "end_to_end"):
            raise ValueError(f"attention_mode must be 'fixed' or 'end_to_end', got {config['attention_mode']!r}")
        self.attention_mode, self.use_attention = config["attention_mode"], bool(config["use_attention"])
        if not config["use_kge"]:
            self.phases = ("cf",)         # no TransR phase (the official --use_kge False; the paper's "w/o KGE")
        self.reg_cf, self.reg_kg = (float(v) for v in config["reg_weight"])
        self.mess_dropout = drop
        self.n_entities, self.n_kg_relations = data.n_entities, data.n_relations

        graph = collaborative_kg(data.n_users, data.n_entities, data.train, data.kg, data.n_relations)
        self.n_nodes, self.n_relations = graph.num_nodes, graph.num_relations
        self.register_buffer("edge_index", graph.edge_index, persistent=False)
        self.register_buffer("edge_type", graph.edge_type, persistent=False)

        self.embedding = nn.Embedding(self.n_nodes, d)
        self.score = RelationalScore(d, self.n_relations, k)
        self.layers = nn.ModuleList(
            GraphAttention(sizes[l], sizes[l + 1], score=self.score, normalizer="dst_softmax", message="identity",
                           update=config["aggregator"], negative_slope=config["negative_slope"])
            for l in range(len(sizes) - 1))
        self.reset_parameters()
        if config.get("pretrain"):
            self.load_pretrained(config["pretrain"])
        # the fixed attention of every CKG edge; a buffer so that checkpoints carry it
        self.register_buffer("edge_attention", self._relation_normalised_weights())
        self._adjacency: FixedAdjacency | None = None

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.embedding.weight)
        self.score.reset_parameters()
        for layer in self.layers:
            for m in layer.update.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def load_pretrained(self, path) -> None:
        """Initialise user and item rows of the embedding table from a BPR-MF run (official ``--pretrain 1``).

        ``path`` is a BPRMF run folder (its ``best.pt``) or checkpoint file; the other entities keep their
        Xavier initialisation, as in the official code (``entity_embed = [pretrained items; xavier others]``).
        """
        from graphattn.training import find_checkpoint, load_checkpoint
        file = find_checkpoint(path, "best.pt")
        state = load_checkpoint(file).get("model", {})
        d = self.embedding.weight.shape[1]
        for key, rows, n in (("user_embedding.weight", slice(self.n_entities, None), self.n_users),
                             ("item_embedding.weight", slice(0, self.n_items), self.n_items)):
            if key not in state:
                raise ValueError(f"pretrain: '{file}' has no '{key}' (expected a BPRMF checkpoint)")
            if tuple(state[key].shape) != (n, d):
                raise ValueError(f"pretrain: '{file}' {key} has shape {tuple(state[key].shape)}, "
                                 f"expected {(n, d)} (same dataset and embedding_size)")
            self.embedding.weight[rows] = state[key].to(self.embedding.weight.dtype)

    def _relation_normalised_weights(self) -> Tensor:
        """Initial weights ``sum_r D_r^{-1} A_r``: 1 / (number of edges of relation r into the head)."""
        key = self.edge_index[1] * self.n_relations + self.edge_type
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse].float()

    # ------------------------------------------------------------------------------------------- graph

    def user_nodes(self, users: Tensor) -> Tensor:
        return users + self.n_entities

    @torch.no_grad()
    def attention_weights(self) -> Tensor:
        """Normalised attention ``alpha(h, r, t)`` of every CKG edge from the current layer-0 embeddings."""
        return self.layers[0].attention(self.embedding.weight, self.edge_index, edge_type=self.edge_type)[:, 0]

    def refresh_attention(self) -> None:
        """Recompute the fixed attention matrix (official: once per epoch, after the KG phase)."""
        if self.use_attention:
            self.edge_attention = self.attention_weights().float()
            self._adjacency = None

    @property
    def adjacency(self) -> FixedAdjacency:
        """The sparse matrix of ``edge_attention``, built once per refresh (and per device)."""
        if self._adjacency is None or self._adjacency.matrix.device != self.edge_attention.device:
            self._adjacency = FixedAdjacency(self.edge_index, self.edge_attention, self.n_nodes)
        return self._adjacency

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._adjacency = None
        return super().load_state_dict(state_dict, strict, assign)

    def on_epoch_end(self) -> None:
        self.refresh_attention()

    def propagate(self, nodes: Tensor | None = None) -> Tensor:
        """Representations (the concatenation of layers 0..L; dropout only in training mode) of every node, or
        of ``nodes`` only (duplicates allowed, order kept).

        With ``nodes`` and a fixed attention matrix, layer ``l`` computes only the rows that later layers need
        (the receptive field of ``nodes``, :func:`graphattn.ops.receptive_fields`) and the readout normalises only
        the rows asked for: the same numbers as ``propagate()[nodes]`` without the full-graph work of the last
        layers. A layer whose field covers more than ``restrict_below`` of the nodes runs on the full matrix
        (slicing the matrix would cost more than it saves).
        """
        if nodes is None or (self.attention_mode == "end_to_end" and self.use_attention):
            reps = self._propagate_all()
            return reps if nodes is None else reps.index_select(0, nodes)
        adjacency = self.adjacency
        fields = receptive_fields(adjacency, nodes, len(self.layers) - 1, int(self.restrict_below * self.n_nodes))
        target = fields[-1] if fields else torch.unique(nodes)
        x, x_nodes = self.embedding.weight, None                  # x holds the rows x_nodes (None: all nodes)
        outputs = [x.index_select(0, target)]
        rows_of_layer = [None] * (len(self.layers) - len(fields)) + fields
        for layer, p, rows in zip(self.layers, self.mess_dropout, rows_of_layer):
            if rows is None:
                x_dst, agg = x, adjacency.propagate(x)
            else:
                agg = adjacency.restrict(rows, x_nodes).propagate(x)
                x_dst = x.index_select(0, rows if x_nodes is None else torch.searchsorted(x_nodes, rows))
                x_nodes = rows
            x = dropout(layer.update(x_dst, agg), p, self.training)
            pick = target if x_nodes is None else torch.searchsorted(x_nodes, target)
            outputs.append(F.normalize(x.index_select(0, pick), dim=1))
        return torch.cat(outputs, dim=1).index_select(0, torch.searchsorted(target, nodes))

    def _propagate_all(self) -> Tensor:
        x = self.embedding.weight
        outputs = [x]
        weights = None
        if self.attention_mode == "end_to_end" and self.use_attention:
            weights = self.layers[0].attention(x, self.edge_index, edge_type=self.edge_type)
        for layer, p in zip(self.layers, self.mess_dropout):
            if weights is None:
                agg = self.adjacency.propagate(x)
            else:
                agg = layer.propagate(weights, x, self.edge_index, self.n_nodes)
            x = dropout(layer.update(x, agg), p, self.training)
            outputs.append(F.normalize(x, dim=1))
        return torch.cat(outputs, dim=1)

    # ------------------------------------------------------------------------------------------- losses

    def samplers(self, config, data, seed):
        cf = BPRSampler(data.train, data.n_items, config["train_batch_size"], seed)
        if "kg" not in self.phases:
            return {"cf": cf}
        heads, rels, tails = self.edge_index[1].cpu().numpy(), self.edge_type.cpu().numpy(), self.edge_index[0].cpu().numpy()
        n_kg = len(data.kg) or len(heads)        # official rule on the KG triples; an empty KG falls back to the CKG's
        bs = config["kg_batch_size"] or max(1, n_kg // max(1, len(data.train) // config["train_batch_size"]))
        kg = KGSampler(np.stack([heads, rels, tails], 1), self.n_nodes, self.n_relations, bs, seed=seed + 1)
        return {"cf": cf, "kg": kg}

    def optimizers(self, config):
        # two Adam optimizers with their own state, as the official code's opt / opt2
        # (the official code's optimisers have no weight decay: regularisation is in the losses)
        return {phase: build_optimizer(config, self.parameters(), weight_decay=0.0) for phase in self.phases}

    def cf_loss(self, users, pos, neg):
        u, i, j = self.propagate(torch.cat([self.user_nodes(users), pos, neg])).chunk(3)
        mf = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg_cf * l2_half(u, i, j) / users.numel()
        return mf + reg, {"bpr": mf.item()}

    def kg_loss(self, heads, relations, tails, neg_tails):
        emb = self.embedding.weight
        e_r = self.score.e_r.index_select(0, relations)                         # (B, k)
        nodes = torch.cat([heads, tails, neg_tails])
        h, t, n = typed_linear(emb.index_select(0, nodes), relations.repeat(3), self.score.W_r).chunk(3)
        pos = (h + e_r - t).pow(2).sum(-1)
        neg = (h + e_r - n).pow(2).sum(-1)
        loss = F.softplus(pos - neg).mean()
        reg = self.reg_kg * l2_half(h, e_r, t, n) / heads.numel()
        return loss + reg, {"transr": loss.item()}

    # ------------------------------------------------------------------------------------------- inference

    @torch.no_grad()
    def full_sort_embeddings(self):
        reps = self.propagate()
        users = reps[self.n_entities:]
        return users, reps[: self.n_items]
