"""CKE: collaborative knowledge-base embedding (the TransR + MF baseline of the KGAT paper)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphattn.ops import typed_linear
from graphattn.registry import register_model

from ..sampler import BPRSampler, KGSampler
from .base import RecModel, bpr_loss, l2_half


class _Joint:
    """One CF batch and one KG batch per step (CKE optimises both losses jointly)."""

    def __init__(self, cf: BPRSampler, kg: KGSampler):
        self.cf, self.kg = cf, kg

    def __len__(self) -> int:
        return len(self.cf)

    def __iter__(self):
        for _ in range(len(self)):
            yield self.cf.next_batch(), self.kg.next_batch()

    def shard(self, rank: int, world_size: int) -> None:
        self.cf.shard(rank, world_size)
        self.kg.shard(rank, world_size)

    def state_dict(self) -> dict:
        return {"cf": self.cf.state_dict(), "kg": self.kg.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.cf.load_state_dict(state["cf"])
        self.kg.load_state_dict(state["kg"])




@register_model("CKE", task="recsys")
class CKE(RecModel):
    r"""Collaborative Knowledge Base Embedding for Recommender Systems (Zhang et al., KDD 2016,
    https://doi.org/10.1145/2939672.2939673), structural-knowledge part, as used as a baseline in KGAT.

    Item vectors add a TransR-trained entity embedding to the collaborative item embedding,
    :math:`\hat y_{ui} = e_u^\top (v_i + x_i)`, where :math:`x_i` is trained by the TransR loss
    :math:`-\ln\sigma(g(h,r,t') - g(h,r,t))` with :math:`g = \|W_r h + e_r - W_r t\|^2` on the item KG.
    Following the KGAT authors' CKE (``Model/CKE.py``) the two losses are summed and optimised jointly with
    one optimizer; here each training step takes one CF batch and one KG batch. The textual and visual
    components of the original CKE are not used (the KGAT benchmarks have no such content).

    Args (config keys): ``embedding_size`` (64), ``kg_embedding_size`` (64), ``reg_weight`` ([1e-5, 1e-5]:
    CF and KG L2 weights), ``kg_batch_size`` (0 = the official rule ``n_triples // (n_train // batch)``).
    """

    phases = ("cf",)

    uses_kg = True

    def __init__(self, config, data):
        super().__init__(config, data)
        d, k = config["embedding_size"], config["kg_embedding_size"]
        self.reg_cf, self.reg_kg = (float(v) for v in config["reg_weight"])
        self.n_entities, self.n_relations = data.n_entities, max(data.n_relations, 1)
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        self.entity_embedding = nn.Embedding(self.n_entities, d)
        self.relation_embedding = nn.Embedding(self.n_relations, k)
        self.W_r = nn.Parameter(torch.empty(self.n_relations, k, d))
        self._sampler_kind = "joint" if len(data.kg) else "cf"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.user_embedding, self.item_embedding, self.entity_embedding, self.relation_embedding):
            nn.init.xavier_uniform_(emb.weight)
        nn.init.xavier_uniform_(self.W_r)

    def samplers(self, config, data, seed):
        samplers = super().samplers(config, data, seed)
        if len(data.kg):
            n_cf = len(samplers["cf"])
            bs = config["kg_batch_size"] or max(1, len(data.kg) // max(1, len(data.train) // config["train_batch_size"]))
            kg = KGSampler(data.kg, self.n_entities, self.n_relations, bs, n_batches=n_cf, seed=seed + 1)
            samplers["cf"] = _Joint(samplers["cf"], kg)
        return samplers

    def training_step(self, phase, batch):
        if self._sampler_kind == "joint":
            cf_batch, kg_batch = batch
            return self.cf_loss(*cf_batch, kg_batch=kg_batch)
        return self.cf_loss(*batch)

    def kg_terms(self, h, r, t, neg):
        e_r = self.relation_embedding(r)
        ph, pt, pn = typed_linear(self.entity_embedding(torch.cat([h, t, neg])), r.repeat(3), self.W_r).chunk(3)
        pos, negative = (ph + e_r - pt).pow(2).sum(-1), (ph + e_r - pn).pow(2).sum(-1)
        loss = F.softplus(pos - negative).mean()
        reg = self.reg_kg * l2_half(ph, pt, pn, e_r) / h.numel()
        return loss, reg

    def cf_loss(self, users, pos, neg, kg_batch=None):
        u = self.user_embedding(users)
        i = self.item_embedding(pos) + self.entity_embedding(pos)
        j = self.item_embedding(neg) + self.entity_embedding(neg)
        mf = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg_cf * l2_half(u, i, j) / users.numel()
        parts = {"bpr": mf.item()}
        loss = mf + reg
        if kg_batch is not None:
            kg, kg_reg = self.kg_terms(*kg_batch)
            loss = loss + kg + kg_reg
            parts["transr"] = kg.item()
        return loss, parts

    def full_sort_embeddings(self):
        items = self.item_embedding.weight + self.entity_embedding.weight[: self.n_items]
        return self.user_embedding.weight, items
