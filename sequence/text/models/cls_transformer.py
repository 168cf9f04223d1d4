"""A one-layer transformer classifier read out by a [CLS] query, built from GraphAttention."""
from __future__ import annotations

import torch
from torch import nn

from graphattn.attention import GraphAttention
from graphattn.registry import register_model

from ..base import TextClassifier
from ..data import PAD

__all__ = ["CLSTransformer"]


@register_model("CLSTransformer", task="text_classification")
class CLSTransformer(TextClassifier):
    r"""One pre-norm transformer layer read out at a [CLS] token: the dot-product counterpart of
    :class:`~sequence.text.models.bilstm_attention.BiLSTMAttn` for Attention AT / iAT (Kitada & Iyatomi,
    https://arxiv.org/abs/2009.12064, apply it to additive attention; the spec asks for this second model).

    .. math::
        x_t = e_t + p_t,\quad z = c + W_o\,\mathrm{MHA}(\mathrm{LN}(c), \mathrm{LN}(x)),\quad
        z' = z + \mathrm{MLP}(\mathrm{LN}(z)),\quad \mathrm{logit} = u^\top \mathrm{LN}(z')

    In a single layer read out at [CLS], only the [CLS] row of the attention reaches the output, so the layer
    is computed as the [CLS] query attending over the tokens (a star graph, like the BiLSTM's readout). The
    one deviation from a textbook layer is that [CLS] does not attend to itself.

    Args (config keys): embedding_size (64), heads (2), ffn_size (128), dropout (0.0).

    Shapes: tokens (B, T), mask (B, T) -> logits (B,); readout weights (B, H, 1, T).
    """

    def __init__(self, config, data):
        super().__init__(config, data)
        e, heads, f = int(config["embedding_size"]), int(config["heads"]), int(config["ffn_size"])
        dropout = float(config["dropout"])
        self.embedding = nn.Embedding(self.vocab_size, e, padding_idx=PAD)
        self.position = nn.Parameter(torch.empty(self.max_len, e))
        self.cls = nn.Parameter(torch.empty(1, 1, e))
        self.norm_q, self.norm_kv, self.norm_ffn, self.norm_out = (nn.LayerNorm(e) for _ in range(4))
        self.readout = GraphAttention(e, e, heads=heads, score="dot", update="project", dropout=dropout)
        self.ffn = nn.Sequential(nn.Linear(e, f), nn.GELU(), nn.Linear(f, e), nn.Dropout(dropout))
        self.out = nn.Linear(e, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.cls, std=0.02)

    def embed(self, tokens):
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"CLSTransformer has positions for {self.max_len} tokens, got {tokens.shape[1]}")
        return self.embedding(tokens)

    def encode(self, emb, mask):
        return emb + self.position[: emb.shape[1]]                              # (B, T, E)

    def decide(self, x, mask):
        c = self.cls.expand(x.shape[0], 1, -1)                                   # (B, 1, E)
        z = c + self.readout(self.norm_q(c), x_src=self.norm_kv(x), key_padding_mask=mask)
        z = z + self.ffn(self.norm_ffn(z))
        return self.out(self.norm_out(z[:, 0])).squeeze(-1)
