"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking."""
from __future__ import annotations

import torch
from torch import nn

from graphattn.registry import register_model

from .base import RecModel, bpr_loss, l2_half


@register_model("BPRMF", task="recsys")
class BPRMF(RecModel):
    r"""BPR: Bayesian Personalized Ranking from Implicit Feedback (Rendle et al., UAI 2009,
    https://arxiv.org/abs/1205.2618), the matrix-factorisation baseline of the KGAT paper.

    .. math:: \hat y_{ui} = e_u^\top e_i,\qquad
              L = -\ln\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda (\|e_u\|^2 + \|e_i\|^2 + \|e_j\|^2) / 2B

    The L2 term is on the batch's embeddings divided by the batch size, as in the KGAT authors' BPR-MF.

    Args (config keys): ``embedding_size`` (64), ``reg_weight`` (1e-5).
    Shapes: users, pos, neg (B,) -> scalar loss.
    """

    def __init__(self, config, data):
        super().__init__(config, data)
        d = config["embedding_size"]
        self.reg_weight = float(config["reg_weight"])
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def cf_loss(self, users, pos, neg):
        u, i, j = self.user_embedding(users), self.item_embedding(pos), self.item_embedding(neg)
        mf = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg_weight * l2_half(u, i, j) / users.numel()
        return mf + reg, {"bpr": mf.item(), "reg": reg.item()}

    def full_sort_embeddings(self):
        return self.user_embedding.weight, self.item_embedding.weight
