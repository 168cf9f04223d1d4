"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking."""
from __future__ import annotations

import torch
from torch import nn

from graphattn.registry import register_model

from ..sampler import BPRSampler
from .base import RecModel, bpr_loss, l2_half


@register_model("BPRMF", task="recsys")
class BPRMF(RecModel):
    r"""BPR: Bayesian Personalized Ranking from Implicit Feedback (Rendle et al., UAI 2009,
    https://arxiv.org/abs/1205.2618), the matrix-factorisation baseline of the KGAT paper.

    .. math:: \hat y_{ui} = e_u^\top e_i,\qquad
              L = -\ln\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda (\|e_u\|^2 + \|e_i\|^2 + \|e_j\|^2) / 2B

    The L2 term is on the batch's embeddings divided by the batch size, as in the KGAT authors' BPR-MF.

    ``cf_sampling`` picks the training sampler (:class:`recsys.sampler.BPRSampler`): ``user`` (default, the
    official KGAT sampler: users uniformly, then one of their items) or ``interaction`` (RecBole's: every training
    interaction once per epoch). On ml-100k under RecBole's protocol the default ranks better
    (docs/results/time_to_quality.md).

    ``init`` is ``xavier_uniform`` (default) or ``xavier_normal`` (RecBole's BPR).

    Args (config keys): ``embedding_size`` (64), ``reg_weight`` (1e-5), ``cf_sampling`` (user), ``init``
    (xavier_uniform).
    Shapes: users, pos, neg (B,) -> scalar loss.
    """

    def __init__(self, config, data):
        super().__init__(config, data)
        d = config["embedding_size"]
        self.reg_weight = float(config["reg_weight"])
        self.init = config.get("init", "xavier_uniform")
        if self.init not in self.INITS:
            raise ValueError(f"init: expected one of {', '.join(self.INITS)}, got {self.init!r}")
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        self.reset_parameters()

    INITS = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}

    def reset_parameters(self) -> None:
        init = self.INITS[self.init]
        init(self.user_embedding.weight)
        init(self.item_embedding.weight)

    def samplers(self, config, data, seed):
        return {"cf": BPRSampler(data.train, data.n_items, config["train_batch_size"], seed,
                                 mode=config.get("cf_sampling", "user"))}

    def cf_loss(self, users, pos, neg):
        u, i, j = self.user_embedding(users), self.item_embedding(pos), self.item_embedding(neg)
        mf = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg_weight * l2_half(u, i, j) / users.numel()
        return mf + reg, {"bpr": mf.item(), "reg": reg.item()}

    def full_sort_embeddings(self):
        return self.user_embedding.weight, self.item_embedding.weight
