"""BiLSTM + additive attention classifier (the Jain & Wallace / Kitada & Iyatomi binary classifier)."""
from __future__ import annotations

import torch
from torch import nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from ..base import TextClassifier
from ..data import PAD

__all__ = ["BiLSTMAttn"]


@register_model("BiLSTMAttn", task="text_classification")
class BiLSTMAttn(TextClassifier):
    r"""BiLSTM with additive attention, the model of Kitada & Iyatomi, "Attention Meets Perturbations"
    (https://arxiv.org/abs/2009.12064; architecture of Jain & Wallace 2019).

    .. math::
        h_t = \mathrm{BiLSTM}(e_{1..T})_t,\quad s_t = w^\top \tanh(W h_t + b),\quad
        a = \mathrm{softmax}_{t \in \text{real}}(s),\quad c = \sum_t a_t h_t,\quad \mathrm{logit} = u^\top c + u_0

    The readout is a star graph (tokens -> one readout node): a :class:`GraphAttention` with the additive
    score, whose query is a learned vector (so ``W_q q`` is the bias ``b``), identity messages and no update.
    Its pre-softmax scores are where Attention AT / iAT perturb (:mod:`sequence.text.adversarial`).

    The backward LSTM reads each sentence reversed over its real tokens (padding stays at the end), which
    equals a packed bidirectional LSTM at every real position and is several times faster on the CPU;
    outputs at padding positions get weight 0.

    Deviations: the tanh layer has a bias (the paper's has none; the learned query supplies it); randomly
    initialised embeddings instead of fastText vectors; sizes reduced (paper: 300 / 128 / 128).

    Args (config keys): embedding_size (64), hidden_size (64 per direction), attention_size (64).

    Shapes: tokens (B, T), mask (B, T) -> logits (B,); readout weights (B, 1, 1, T).
    """

    def __init__(self, config, data):
        super().__init__(config, data)
        e, h, a = int(config["embedding_size"]), int(config["hidden_size"]), int(config["attention_size"])
        self.embedding = nn.Embedding(self.vocab_size, e, padding_idx=PAD)
        self.lstm_fwd = nn.LSTM(e, h, batch_first=True)
        self.lstm_bwd = nn.LSTM(e, h, batch_first=True)
        self.query = nn.Parameter(torch.empty(1, 1, a))
        self.readout = GraphAttention(a, src_dim=2 * h, heads=1, head_dim=a, score="additive",
                                      message="identity", update="none")
        self.out = nn.Linear(2 * h, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.query, std=0.1)

    def embed(self, tokens):
        return self.embedding(tokens)

    def encode(self, emb, mask):
        flip = _reversal(mask)
        return torch.cat([self.lstm_fwd(emb)[0], _gather(self.lstm_bwd(_gather(emb, flip))[0], flip)], -1)  # (B, T, 2h)

    def decide(self, h, mask):
        context = self.readout(self.query.expand(h.shape[0], 1, -1), x_src=h, key_padding_mask=mask)  # (B, 1, 2h)
        return self.out(context[:, 0]).squeeze(-1)


def _reversal(mask):
    """``(B, T)`` gather index reversing each row's real (leading) positions and keeping padding in place."""
    t = torch.arange(mask.shape[1], device=mask.device)
    back = mask.sum(1, keepdim=True) - 1 - t                                 # (B, T)
    return torch.where(back >= 0, back, t)


def _gather(x, index):
    return x.gather(1, index.unsqueeze(-1).expand_as(x))
