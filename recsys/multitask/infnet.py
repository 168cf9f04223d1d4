r"""INFNet: A Task-aware Information Flow Network for Large-Scale Recommendation Systems
(Li et al., Kuaishou, 2025, https://arxiv.org/abs/2508.11565).

Every input is a token of one of three types, each with a few proxy tokens:

- categorical tokens :math:`C \in R^{M\times d}` (one per field), proxies
  :math:`\tilde C = \mathrm{reshape}(\phi_{cat}(\mathrm{flatten}(C))) \in R^{m\times d}`;
- sequence tokens :math:`S \in R^{L\times d}` (F behaviour types, padded), one proxy per type
  :math:`\tilde S_a = \sum_t \phi_{seq}(s_{a,t})` over the type's real tokens;
- task tokens :math:`T \in R^{N_{task}\times d}` (learned, one per task) and shared task proxies
  :math:`\tilde T \in R^{N_s\times d}` (learned).

Block :math:`l` (paper v1 equations), with :math:`CA(Q, K, V) = \mathrm{softmax}(QW_Q (KW_K)^\top/\sqrt{d_k}) VW_V`
and each CA its own relation of the token-flow graph (``recsys.multitask.graphs``):

.. math::
    \tilde C' = CA(\tilde C, S) + CA(\tilde C, T),\quad \tilde S' = CA(\tilde S, C) + CA(\tilde S, T),\quad
    \tilde T' = CA(\tilde T, C) + CA(\tilde T, S),\quad \hat T = CA(T, C) + CA(T, S)

    C' = PGU(C, \tilde C),\quad S' = PGU(S, \tilde S),\quad T' = PGU(\hat T, \tilde T),\quad
    PGU(X, \tilde X) = X \odot \sigma(\mathrm{MLP}(\mathrm{flatten}(\tilde X)))

The heterogeneous flow (the 8 CAs) runs through :class:`graphattn.attention.GraphAttention`, one layer per edge
type: softmax over the keys of one edge type, per-type outputs summed at the destination (no softmax across
types), padded sequence positions masked (``key_padding_mask`` on the dense path, absent edges on the sparse
path; both paths compute the same function). Each task ``i`` has a tower on its own final task token,
:math:`y_i = \sigma(\mathrm{MLP}_i(T_i^{(N)}))`, and the loss is the summed BCE (``MultiTaskModel``).

Ambiguities of the paper, exposed as options. The printed v1 equations are ``gate_form="sigmoid",
gate_proxies="input", residual=False``; the defaults read them with the prose and the later version:

- ``gate_proxies``: ``"updated"`` (default) — the gates read the proxies just produced by the heterogeneous
  flow, as the prose says ("proxies from the heterogeneous stage"); ``"input"`` — the block-input proxies
  :math:`\tilde X^{(l)}` as printed.
- ``residual``: True (default) adds the block input to every updated proxy / token (the text says residual
  connections are used; they are not in the equations); False as printed. ``layer_norm`` adds a LayerNorm
  after each update (as in the later "hub"/BGU wording and the UniRank port).
- ``gate_form``: ``"affine"`` (default) :math:`X\odot\sigma(\alpha)+\beta` (the later BGU wording);
  ``"sigmoid"`` :math:`X\odot\sigma(g)` as printed.
- ``seq_pooling``: ``"sum"`` as printed; ``"mean"`` (the UniRank port), both over real tokens only.

Why the defaults moved off the printed form: proxies are only ever queries, so what they compute (e.g. the
field crossings of :math:`\phi_{cat}`, an MLP over all fields) reaches the task tokens only through the
gates. A purely multiplicative gate :math:`X\odot\sigma(g)` followed by :math:`CA(T, X)` yields
:math:`W_V(\sigma(g)\odot\bar x)` with :math:`\bar x` the attention-weighted mean token, so the crossing
arrives only as a rescaling of sample-dependent content; the affine gate's :math:`\beta` passes through the
softmax-weighted sum unchanged (weights sum to 1) and reaches the task tokens additively. On the spec's
synthetic data (60k impressions, d=16, seeds 0-1) the defaults score 0.871 test AUC on the field-crossing
task against 0.748 for the printed form (Shared-Bottom 0.872, MMoE 0.877); without residuals the learned task
tokens are only queries of the first block, after which each task token is a convex mix of other tokens' values
(``experiments/infnet_synthetic.py``; the printed form stays available as ``--variants INFNet-printed``).
Known shortfall on that data: trained jointly, INFNet barely learns the sequence-overlap task (test AUC
0.50-0.59, mean 0.54 over 3 seeds, against 0.61-0.62 for Shared-Bottom / MMoE) and so loses on mean AUC;
trained on that task alone (``task_weights: [0, 1, 0]``) it reaches 0.607 (Shared-Bottom 0.613). What the
baselines reach there is item popularity, not the planted signal: the target item's smoothed training label
rate alone scores 0.62-0.63 on that task, the indicator [target in like sequence] 0.78-0.79 (oracle 0.83-0.85),
so no model learns the target-in-sequence match. INFNet's overlap validation AUC stays at 0.50-0.53 while the
other two tasks peak (epochs 4-6, where mean-AUC early stopping picks the checkpoint) and only creeps up
afterwards (best at epochs 8-11). After joint training the three final task tokens carry the same information
(a linear probe on any of them: cross 0.880, overlap 0.505, mixed 0.831) and attend uniformly (0.050 per
field) in blocks 1-2: with small tokens the block-1 queries (the learned task tokens) barely change the
softmax, every task token receives the same mix, and the gates and values are shared, so the towers read
one shared 16-d code dominated by the two field tasks. ``token_init_std: 1.0`` (default 0.1) makes the
attention task-specific (e.g. block 2: ``mixed`` puts 0.23 on f4) but neither brings the overlap signal into
the tokens nor raises mean AUC (seeds 0-1: 0.733 vs 0.735); ``ca_heads: 4``, ``embedding_size: 32``,
``layer_norm: true`` and lr 1e-3 did not either (``experiments/infnet_synthetic.py --define``).

Issue #20 (diagnosis of the failing check, ``experiments/infnet_synthetic.py``): the synthetic data do carry
their planted signals (a logistic regression on the planted features beats every trained model on every task
by >= 0.03 AUC at 60k and >= 0.11 at 20k, and with random 16-d item embeddings the max dot product between the target and the like
sequence already ranks the overlap task at 0.77), and the implementation matches the v1 equations term by term
(8 relations, softmax within each, sums, PGU, residuals, heads on the task tokens). What fails is the token
flow for the overlap task: trained jointly (60k impressions, ``embedding_init_std`` 1.0, 8 epochs, seed 0,
``docs/results/infnet_synthetic/probe_60k_seed0.json``) INFNet's overlap head stays at chance (test AUC 0.500)
while its crossing and mixed heads match the best models (0.885 / 0.838), whereas the DIN-style
``TargetAttention`` (the candidate queries the history directly) reaches 0.643, above item popularity (0.623),
and Shared-Bottom 0.552. With the same grid and per-task early stopping at 20k impressions, seeds 0-2, INFNet
scores 0.683 mean AUC vs Shared-Bottom 0.686 / MMoE 0.688 (``docs/results/multitask.md``). In INFNet no token built from the target item queries the
sequence except the categorical proxies, whose result reaches the task tokens only through the per-impression
gate vector shared with the crossing signal; the task tokens themselves are constant queries in block 1.
``cat_field_embedding`` (a learned per-field vector added to the categorical tokens, so the task tokens can
select the item field) was tried and did not change this (overlap 0.50-0.52). Trained on the overlap task
alone (``task_weights: [0, 1, 0]``, 30k impressions, init 1.0, 8 epochs) INFNet reaches only 0.54 validation /
0.51 test AUC, below what the target item's popularity alone gives (0.61-0.63), so the failure is not task
interference: the spec's flow does not bring the target item's identity to the overlap head.

Deviations and reconstructions (R): :math:`\phi_{cat}` is a two-layer MLP (width ``m*d``) and
:math:`\phi_{seq}` a linear map — the paper only says "MLP" / "projection"; the gate MLP has one hidden
layer of ``gate_hidden``; sequence tokens get a learned behaviour-type embedding (``seq_type_embedding``,
our reading of "side info") so the task tokens can tell behaviour types apart; ``ca_heads > 1`` splits CA
into heads with concatenated outputs (the paper writes one head); the number of blocks is not given in the
paper (``num_blocks``, default 3). ``use_task_tokens=False`` is the paper's "no task tokens" ablation: no
``T`` / :math:`\hat T`, the CAs that use ``T`` as keys drop out, and every tower reads the flattened final
shared task proxies. ``use_pgu=False`` drops the homogeneous flow (tokens pass through unchanged).
Only what reaches a head is built (:func:`plan_block`): with ``gate_proxies="input"`` (printed) the proxy
updates of the last two blocks feed only gates of tokens nobody reads, so with ``num_blocks=2`` the proxies
act through the first block's gates alone (``gate_proxies="updated"`` keeps the first block's proxy CAs).

Args (config keys, defaults in ``recsys/multitask/model/INFNet.yaml``):
    embedding_size (16): token width d.
    num_blocks (3): stacked blocks N.
    num_cat_proxies (4): m.  num_task_shared (2): N_s.
    ca_heads (1): heads per cross attention; ca_output ("none"): ``"none"`` or ``"project"`` (a W_o).
    cat_field_embedding (False): add a learned per-field vector to the categorical tokens (not in the paper).
    embedding_init_std (0.05, task key): std of the embedding tables' normal init.
    gate_hidden (64), gate_form ("affine"), gate_proxies ("updated"), residual (True), layer_norm (False),
    seq_pooling ("sum"), seq_type_embedding (True), token_init_std (0.1: normal init of the task tokens and
    shared task proxies; not given in the paper), use_task_tokens (True), use_pgu (True),
    attention_path ("dense" | "sparse"), tower_hidden ([64]), dropout (0.0), task_weights (null).

Shapes:
    forward(batch) with batch["cat"] (B, M), batch["seq"] F x (B, n_a) -> logits (B, N_task)
    encode(C (B, M, d), S (B, L, d), seq_mask (B, L)) -> dict of final tokens per node type
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from .base import FeatureEmbedding, MultiTaskModel, masked_pool, mlp
from .data import MultiTaskData
from .graphs import token_flow_graph

__all__ = ["INFNet", "HeteroCrossFlow", "ProxyGatedUnit"]


def _key(src: str, dst: str) -> str:
    return f"{src}__to__{dst}"


class HeteroCrossFlow(nn.Module):
    """The heterogeneous flow: one :class:`GraphAttention` per edge type, outputs summed per destination type.

    Args:
        relations: ``(src, dst)`` node-type pairs (a subset of ``graphs.HETERO_EDGES``).
        dim: token width d.  heads: heads per relation.  output: ``"none"`` (concatenated heads, the printed CA)
        or ``"project"`` (an output projection).

    Shapes:
        tokens: node type -> (B, n, d); seq_mask (B, L) -> node type -> (B, n_dst, d) for each destination type.
    """

    def __init__(self, relations: list[tuple[str, str]], dim: int, heads: int = 1, output: str = "none"):
        super().__init__()
        if output not in ("none", "project"):
            raise ValueError(f"ca_output must be 'none' or 'project', got {output!r}")
        self.relations = list(relations)
        self.attn = nn.ModuleDict({
            _key(s, t): GraphAttention(dim, dim, heads, src_dim=dim, score="dot", normalizer="dst_softmax",
                                       message="value", update=output)
            for s, t in self.relations})

    def forward(self, tokens: Mapping[str, Tensor], seq_mask: Tensor, graph: Any = None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for src, dst in self.relations:
            layer = self.attn[_key(src, dst)]
            x_dst, x_src = tokens[dst], tokens[src]
            if graph is None:                                   # dense: (B, n_dst, d) attends (B, n_src, d)
                kpm = seq_mask if src == "seq" else None
                y = layer(x_dst, x_src=x_src, key_padding_mask=kpm)
            else:                                               # sparse: flattened nodes of the typed graph
                b, n, d = x_dst.shape
                edge_index = graph[(src, "to", dst)].edge_index
                y = layer(x_dst.reshape(b * n, d), edge_index, x_src=x_src.reshape(-1, x_src.shape[-1]))
                y = y.reshape(b, n, -1)
            out[dst] = y if dst not in out else out[dst] + y
        return out


class ProxyGatedUnit(nn.Module):
    """``PGU(X, X~) = X * sigmoid(MLP(flatten(X~)))`` (``form="sigmoid"``) or ``X * sigmoid(a) + b``
    (``form="affine"``); one d-vector gate per impression, broadcast over its n tokens.

    Shapes: x (B, n, d), proxies (B, n~, d) -> (B, n, d)
    """

    def __init__(self, num_proxies: int, dim: int, hidden: int = 64, form: str = "sigmoid"):
        super().__init__()
        if form not in ("sigmoid", "affine"):
            raise ValueError(f"gate_form must be 'sigmoid' or 'affine', got {form!r}")
        self.form = form
        self.mlp = mlp(num_proxies * dim, [hidden] if hidden else [], dim * (2 if form == "affine" else 1))

    def forward(self, x: Tensor, proxies: Tensor) -> Tensor:
        g = self.mlp(proxies.flatten(1))                                   # (B, d) or (B, 2d); slot order kept
        if self.form == "sigmoid":
            return x * torch.sigmoid(g).unsqueeze(1)
        alpha, beta = g.chunk(2, dim=-1)
        return x * torch.sigmoid(alpha).unsqueeze(1) + beta.unsqueeze(1)


_OUT_RELATIONS = {"cat_proxy": (("seq", "cat_proxy"), ("task", "cat_proxy")),
                  "seq_proxy": (("cat", "seq_proxy"), ("task", "seq_proxy")),
                  "task_shared": (("cat", "task_shared"), ("seq", "task_shared")),
                  "task": (("cat", "task"), ("seq", "task"))}
_GATE_OF = {"cat": "cat_proxy", "seq": "seq_proxy", "task": "task_shared"}


def plan_block(needed: set[str], exists: set[str], gate_proxies: str, use_pgu: bool
               ) -> tuple[list[tuple[str, str]], list[str], set[str]]:
    """What one block must compute to produce the node types in ``needed``.

    Returns the heterogeneous relations, the gated token types and the input types the block reads. The
    heads read only the final task tokens (or shared task proxies), so later blocks leave out CAs and gates
    whose results nobody reads (with the printed equations, e.g., the proxy updates of the last two blocks).
    """
    if gate_proxies not in ("input", "updated"):
        raise ValueError(f"gate_proxies must be 'input' or 'updated', got {gate_proxies!r}")
    gated = [t for t in ("cat", "seq", "task") if t in needed and use_pgu and _GATE_OF[t] in exists]
    het_out = {t for t in ("cat_proxy", "seq_proxy", "task_shared", "task") if t in needed}
    if gate_proxies == "updated":
        het_out |= {_GATE_OF[t] for t in gated}
    relations = [r for out in ("cat_proxy", "seq_proxy", "task_shared", "task") if out in het_out
                 for r in _OUT_RELATIONS[out] if r[0] in exists and r[1] in exists]
    inputs = {t for t in needed | het_out if t in exists}
    inputs |= {src for src, _ in relations}
    if gate_proxies == "input":
        inputs |= {_GATE_OF[t] for t in gated}
    return relations, gated, inputs


class INFNetBlock(nn.Module):
    """One block: heterogeneous flow (CAs) then homogeneous flow (PGUs), limited to the node types in
    ``needed`` (see :func:`plan_block`). See the module docstring for the equations."""

    def __init__(self, dim: int, proxies: dict[str, int], needed: set[str], exists: set[str], *, heads: int,
                 ca_output: str, gate_hidden: int, gate_form: str, gate_proxies: str, residual: bool,
                 layer_norm: bool, use_pgu: bool):
        super().__init__()
        relations, gated, self.inputs = plan_block(needed, exists, gate_proxies, use_pgu)
        self.needed = set(needed)
        self.flow = HeteroCrossFlow(relations, dim, heads, ca_output)
        self.gate_proxies, self.residual = gate_proxies, residual
        self.pgu = nn.ModuleDict({t: ProxyGatedUnit(proxies[_GATE_OF[t]], dim, gate_hidden, gate_form) for t in gated})
        updated = sorted(set(needed) | {dst for _, dst in relations})
        self.norms = nn.ModuleDict({t: nn.LayerNorm(dim) for t in updated}) if layer_norm else None

    def _finish(self, name: str, new: Tensor, old: Tensor) -> Tensor:
        if self.residual:
            new = new + old
        if self.norms is not None:
            new = self.norms[name](new)
        return new

    def forward(self, tok: dict[str, Tensor], seq_mask: Tensor, graph: Any = None) -> dict[str, Tensor]:
        het = self.flow(tok, seq_mask, graph)
        new = {p: self._finish(p, het[p], tok[p]) for p in het if p != "task"}
        out: dict[str, Tensor] = {}
        for t in self.needed:
            if t == "task":
                t_hat = het["task"]                                                  # (B, N_task, d)
                if "task" in self.pgu:
                    src = tok if self.gate_proxies == "input" else new
                    t_hat = self.pgu["task"](t_hat, src["task_shared"])
                out[t] = self._finish(t, t_hat, tok[t])
            elif t in self.pgu:                                                       # cat, seq
                src = tok if self.gate_proxies == "input" else new
                out[t] = self._finish(t, self.pgu[t](tok[t], src[_GATE_OF[t]]), tok[t])
            else:                         # a proxy updated by the flow, or a type with nothing to do
                out[t] = new.get(t, tok.get(t))
        return out


@register_model("INFNet", task="multitask")
class INFNet(MultiTaskModel):
    __doc__ = __doc__

    def __init__(self, config: Mapping[str, Any], data: MultiTaskData):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.dim = d
        self.embedding = FeatureEmbedding(data, d, type_embedding=bool(config["seq_type_embedding"]),
                                          init_std=float(config["embedding_init_std"]))
        self.field_embedding = (nn.Parameter(torch.empty(self.embedding.num_fields, d))
                                if bool(config["cat_field_embedding"]) else None)
        m, f = int(config["num_cat_proxies"]), self.embedding.num_seq_types
        n_s, num_cat = int(config["num_task_shared"]), self.embedding.num_fields
        self.num_cat_proxies, self.num_seq_types, self.num_task_shared = m, f, n_s
        self.use_task_tokens = bool(config["use_task_tokens"])
        self.seq_pooling = str(config["seq_pooling"])
        if self.seq_pooling not in ("sum", "mean"):
            raise ValueError(f"seq_pooling must be 'sum' or 'mean', got {self.seq_pooling!r}")
        self.path = str(config["attention_path"])
        if self.path not in ("dense", "sparse"):
            raise ValueError(f"attention_path must be 'dense' or 'sparse', got {self.path!r}")
        self.token_init_std = float(config["token_init_std"])
        if not self.token_init_std > 0:
            raise ValueError(f"token_init_std must be > 0, got {self.token_init_std}")
        self.task_tokens = nn.Parameter(torch.empty(self.num_tasks, d)) if self.use_task_tokens else None
        sizes = {"cat": num_cat, "cat_proxy": m, "seq": sum(data.seq_lengths), "seq_proxy": f,
                 "task": self.num_tasks if self.use_task_tokens else 0, "task_shared": n_s}
        exists = {t for t, n in sizes.items() if n > 0}
        needed = {"task"} if self.use_task_tokens else {"task_shared"}
        blocks = []
        for _ in range(int(config["num_blocks"])):                       # built from the last block backwards
            block = INFNetBlock(d, sizes, needed, exists, heads=int(config["ca_heads"]),
                                ca_output=str(config["ca_output"]), gate_hidden=int(config["gate_hidden"]),
                                gate_form=str(config["gate_form"]), gate_proxies=str(config["gate_proxies"]),
                                residual=bool(config["residual"]), layer_norm=bool(config["layer_norm"]),
                                use_pgu=bool(config["use_pgu"]))
            blocks.insert(0, block)
            needed = block.inputs
        if not blocks:
            raise ValueError("num_blocks must be >= 1")
        self.blocks = nn.ModuleList(blocks)
        self.initial_types = needed
        self.phi_cat = mlp(num_cat * d, [m * d], m * d) if "cat_proxy" in needed else None
        self.phi_seq = nn.Linear(d, d) if "seq_proxy" in needed else None
        self.task_shared = nn.Parameter(torch.empty(n_s, d)) if "task_shared" in needed else None
        tower_in = d if self.use_task_tokens else n_s * d
        self.towers = nn.ModuleList([mlp(tower_in, list(config["tower_hidden"]), 1, float(config["dropout"]))
                                     for _ in range(self.num_tasks)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.field_embedding is not None:
            nn.init.normal_(self.field_embedding, std=self.embedding.init_std)
        if self.task_tokens is not None:
            nn.init.normal_(self.task_tokens, std=self.token_init_std)
        if self.task_shared is not None:
            nn.init.normal_(self.task_shared, std=self.token_init_std)

    def initial_tokens(self, c: Tensor, s: Tensor, seq_mask: Tensor) -> dict[str, Tensor]:
        """Block-0 tokens and proxies from the embedded fields ``c`` (B, M, d) and sequences ``s`` (B, L, d)."""
        b, d = c.shape[0], self.dim
        if self.field_embedding is not None:
            c = c + self.field_embedding                                                     # field identity
        tok = {"cat": c, "seq": s}
        if self.task_shared is not None:
            tok["task_shared"] = self.task_shared.expand(b, -1, -1)
        if self.phi_cat is not None:
            tok["cat_proxy"] = self.phi_cat(c.flatten(1)).view(b, self.num_cat_proxies, d)   # (B, m, d)
        if self.phi_seq is not None:
            seq_type = self.embedding.seq_type
            proj = self.phi_seq(s)                                                           # (B, L, d)
            tok["seq_proxy"] = torch.stack(
                [masked_pool(proj[:, seq_type == a], seq_mask[:, seq_type == a], self.seq_pooling)
                 for a in range(self.num_seq_types)], dim=1)                                 # (B, F, d)
        if self.use_task_tokens:
            tok["task"] = self.task_tokens.expand(b, -1, -1)
        return tok

    def encode(self, c: Tensor, s: Tensor, seq_mask: Tensor, path: str | None = None) -> dict[str, Tensor]:
        """Run the blocks; ``path`` ``"dense"`` or ``"sparse"`` (default: the ``attention_path`` key)."""
        path = path or self.path
        tok = self.initial_tokens(c, s, seq_mask)
        graph = None
        if path == "sparse":
            graph = token_flow_graph(seq_mask, c.shape[1], self.num_cat_proxies, self.num_seq_types,
                                     self.num_tasks, self.num_task_shared, self.use_task_tokens)
        for block in self.blocks:
            tok = block(tok, seq_mask, graph)
        return tok

    def heads(self, tok: Mapping[str, Tensor]) -> Tensor:
        if self.use_task_tokens:
            return torch.cat([tower(tok["task"][:, i]) for i, tower in enumerate(self.towers)], dim=1)
        shared = tok["task_shared"].flatten(1)
        return torch.cat([tower(shared) for tower in self.towers], dim=1)

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        c, s, mask = self.embedding(batch)
        return self.heads(self.encode(c, s, mask))
