r"""LMEye in miniature: a frozen LM that *requests* the visual information it needs.

Li et al., "LMEye: An Interactive Perception Network for Large Language Models", arXiv 2305.03701
(https://arxiv.org/abs/2305.03701); code github.com/YunxinLi/LingCloud (``Lmeye/lmeye_model.py``).

* :class:`TinyCausalLM` - the "LLM": token + position embeddings, ``layers`` pre-LN blocks of the core's
  :class:`GraphAttention` on the causal graph (dense path, lower-triangular mask), a vocabulary head. It can
  take input *embeddings*, so visual tokens replace token rows at chosen slots. Pretrained on the text task
  with oracle fact tokens (:mod:`.data`), then frozen.
* :class:`DigitCNN` - the "vision encoder": a fully convolutional net trained on single 8x8 digits, frozen;
  on a 16x16 canvas its feature map is pooled per quadrant (4 region features) and over everything (global).
* :class:`StaticVisual` - the static baseline (BLIP-2-like bottleneck): the four prefix slots get
  ``Linear(global feature)``; the request and inserted slots keep their learned / ``null`` embeddings.
* :class:`LMEye` - two prefix slots get ``Linear(global)`` (the static look), the request slot a learned
  vector; pass 1 of the frozen LM gives the hidden state ``r`` at the request slot; ``Q = W_q r`` (no bias:
  a zero request gives zero queries) are ``INSERT_SLOTS`` request queries, appended after the 4 region
  tokens (+ learned region-position embeddings) in a 1-layer interaction transformer with a causal mask
  (queries read every region, regions never read the queries, as in the frozen CLIP text encoder of the
  paper); its last outputs, ``Linear`` to the LM width, are added to the learned embeddings of the inserted
  slots; pass 2 of the LM (same causal mask) answers. Both models thus feed the LM 4 visual tokens.

.. math::
    r = h^{(1)}_{\text{req}},\quad Q = W_q r,\quad
    v = W_o\,\mathrm{Block}_{\text{causal}}([R + P;\ Q])_{-m:},\quad
    \hat y = \mathrm{LM}(e \text{ with } e_{\text{ins}} \mathrel{+}= v)_{\text{ans}}

Deviations: the interaction transformer is trained from scratch (the paper reuses a frozen CLIP text
encoder), the "LLM" is a 2-layer width-64 causal transformer pretrained only on the templated text task,
and there is no image-text pretraining stage.

Shapes: tokens (B, L); images (B, 1, 16, 16); logits at the answer slot (B, |vocab|).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention

from .data import INSERT_SLOTS, TOKEN, VOCAB, layout

__all__ = ["Block", "TinyCausalLM", "DigitCNN", "StaticVisual", "LMEye", "freeze"]


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients to every parameter of ``module`` and keep it in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class Block(nn.Module):
    """Pre-LN transformer block; attention is one :class:`GraphAttention` (dense path, boolean mask)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, dim, heads, update="project")
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class TinyCausalLM(nn.Module):
    """A small causal LM over the miniature's vocabulary (see the module docstring).

    Args: dim (64), layers (2), heads (4), max_len (the layout's length).
    Shapes: forward(embeddings (B, L, D)) -> (hidden (B, L, D), logits (B, L, |V|)); embed(tokens (B, L)).
    """

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, max_len: int | None = None):
        super().__init__()
        max_len = layout()["length"] if max_len is None else max_len
        self.dim = dim
        self.tok = nn.Embedding(len(VOCAB), dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(VOCAB))

    def embed(self, tokens: Tensor) -> Tensor:
        return self.tok(tokens)

    def forward(self, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        L = embeddings.shape[1]
        mask = torch.ones(L, L, dtype=torch.bool, device=embeddings.device).tril()   # j -> i only for j <= i
        h = embeddings + self.pos[:L]
        for block in self.blocks:
            h = block(h, mask)
        h = self.norm(h)
        return h, self.head(h)


class DigitCNN(nn.Module):
    """Fully convolutional digit classifier; ``regions`` pools its map per quadrant of a 2x2 canvas.

    Shapes: forward(x (B, 1, 8, 8)) -> logits (B, 10); regions(canvas (B, 1, 16, 16)) -> (regions (B, 4, F),
    global (B, F)).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.trunk = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x).mean((-2, -1)))

    def regions(self, canvas: Tensor) -> tuple[Tensor, Tensor]:
        if canvas.dim() != 4 or canvas.shape[-2:] != (16, 16):
            raise ValueError(f"expected canvases (B, 1, 16, 16), got {tuple(canvas.shape)}")
        fmap = self.trunk(canvas)                                              # (B, F, 16, 16)
        quads = F.avg_pool2d(fmap, 8).flatten(2).transpose(1, 2)               # (B, 4, F) in reading order
        return quads, fmap.mean((-2, -1))


class _Visual(nn.Module):
    """Shared pieces: the frozen LM and CNN (not trained, not in the optimiser), the token layout."""

    def __init__(self, lm: TinyCausalLM, cnn: DigitCNN):
        super().__init__()
        self.lm, self.cnn = freeze(lm), freeze(cnn)
        self.lay = layout()

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()
        self.cnn.eval()
        return self

    def untrained_parameters(self) -> set[str]:
        return {n for n, p in self.named_parameters() if not p.requires_grad}

    def base_embeddings(self, question: Tensor) -> Tensor:
        """The LM's embeddings of ``null`` slots + question + request + answer markers: (B, L, D)."""
        B, lay = question.shape[0], self.lay
        tokens = torch.full((B, lay["length"]), TOKEN["<null>"], dtype=torch.long, device=question.device)
        tokens[:, lay["question"]] = question
        tokens[:, lay["request"]] = TOKEN["<req>"]
        tokens[:, lay["answer"]] = TOKEN["<ans>"]
        return self.lm.embed(tokens)

    def answer_logits(self, emb: Tensor) -> Tensor:
        return self.lm(emb)[1][:, self.lay["answer"]]


class StaticVisual(_Visual):
    """Static baseline: ``Linear(global)`` -> the 4 prefix slots."""

    def __init__(self, lm: TinyCausalLM, cnn: DigitCNN):
        super().__init__(lm, cnn)
        self.proj = nn.Linear(cnn.width, len(self.lay["prefix"]) * lm.dim)

    def forward(self, canvas: Tensor, question: Tensor) -> Tensor:
        return self.from_features(*self.cnn.regions(canvas), question)

    def from_features(self, regions: Tensor, glob: Tensor, question: Tensor) -> Tensor:
        """The same from the frozen CNN's features (cached by the training loop)."""
        emb = self.base_embeddings(question).clone()
        emb[:, self.lay["prefix"]] = self.proj(glob).unflatten(-1, (len(self.lay["prefix"]), self.lm.dim))
        return self.answer_logits(emb)


class LMEye(_Visual):
    """Request-based visual information interaction (see the module docstring).

    Args: lm, cnn (frozen), static_tokens (2), inter_dim (64), heads (4).
    ``forward(..., zero_request=True)`` replaces the request hidden state by zeros (the ablation).
    """

    def __init__(self, lm: TinyCausalLM, cnn: DigitCNN, static_tokens: int = 2, inter_dim: int = 64, heads: int = 4):
        super().__init__(lm, cnn)
        if not 1 <= static_tokens <= len(self.lay["prefix"]):
            raise ValueError(f"static_tokens must lie in [1, {len(self.lay['prefix'])}], got {static_tokens}")
        D, self.k, self.m = lm.dim, static_tokens, INSERT_SLOTS
        self.static = nn.Linear(cnn.width, self.k * D)
        self.request_embed = nn.Parameter(torch.randn(D) * 0.02)
        self.insert_embed = nn.Parameter(torch.randn(self.m, D) * 0.02)
        self.to_queries = nn.Linear(D, self.m * inter_dim, bias=False)
        self.region_in = nn.Linear(cnn.width, inter_dim)
        self.region_pos = nn.Parameter(torch.randn(4, inter_dim) * 0.02)
        self.interact = Block(inter_dim, heads)
        self.out = nn.Linear(inter_dim, D)
        n = 4 + self.m
        self.register_buffer("interaction_mask", torch.ones(n, n, dtype=torch.bool).tril(), persistent=False)

    def first_pass(self, regions: Tensor, glob: Tensor, question: Tensor) -> tuple[Tensor, Tensor]:
        """(embeddings with the static look, request hidden state r (B, D)) from the CNN's features."""
        emb = self.base_embeddings(question).clone()
        emb[:, self.lay["prefix"][: self.k]] = self.static(glob).unflatten(-1, (self.k, self.lm.dim))
        emb[:, self.lay["request"]] = emb[:, self.lay["request"]] + self.request_embed
        emb[:, self.lay["insert"]] = emb[:, self.lay["insert"]] + self.insert_embed
        hidden, _ = self.lm(emb)
        return emb, hidden[:, self.lay["request"]]

    def interaction(self, regions: Tensor, request: Tensor) -> Tensor:
        """Request -> queries that read the regions (causal: queries after regions): (B, m, D)."""
        q = self.to_queries(request).unflatten(-1, (self.m, -1))                # (B, m, Di)
        seq = torch.cat([self.region_in(regions) + self.region_pos, q], dim=1)  # (B, 4 + m, Di)
        return self.out(self.interact(seq, self.interaction_mask)[:, -self.m:])

    def forward(self, canvas: Tensor, question: Tensor, zero_request: bool = False) -> Tensor:
        return self.from_features(*self.cnn.regions(canvas), question, zero_request)

    def from_features(self, regions: Tensor, glob: Tensor, question: Tensor, zero_request: bool = False) -> Tensor:
        """The same from the frozen CNN's features (cached by the training loop)."""
        emb, r = self.first_pass(regions, glob, question)
        if zero_request:
            r = torch.zeros_like(r)
        emb = emb.clone()
        emb[:, self.lay["insert"]] = emb[:, self.lay["insert"]] + self.interaction(regions, r)
        return self.answer_logits(emb)
