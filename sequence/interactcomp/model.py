r"""A learned InteractComp policy: a small transformer over the interaction history that picks the next action.

InteractComp (Deng et al., arXiv 2510.24668, https://arxiv.org/abs/2510.24668) evaluates LLM search agents
that may answer, search or ask the user. The miniature replaces the LLM with this policy: the history is
tokenised (:mod:`.tokens`), ``layers`` pre-LN blocks of the core's :class:`GraphAttention` (dot score,
softmax over each token's senders on the complete graph of the history, so every token reads every other -
result tokens can check themselves against the later replies) and an MLP update it, and the ``DECIDE``
token's output gives

.. math::
    p(\text{action}) = \mathrm{softmax}(W_a h_0),\quad
    p(\text{ask } (a, v)) = \mathrm{softmax}(W_q h_0),\quad
    p(\text{answer } e) \propto \sum_{j:\,\text{result } j \text{ names } e} \exp(q(h_0) \cdot k(h_j) / \sqrt{d})

the last a pointer over the search results (the core's :class:`DotProductScore`), whose probability of the
chosen entity is the policy's self-reported confidence. It is trained by imitation
(:class:`~.task.InteractCompTask`) of a mix of the information-gain asker and the over-confident guesser,
so it holds both behaviours; left alone it behaves like the majority (answers at once), and the harness's
``forced_ask`` mode reveals the asking it learned from the minority.

Deviations: the paper's agents are LLMs prompted with a ReAct loop; here a 2-layer, width-64 policy trained
on scripted demonstrations, and ``search`` takes no free-text query (the harness composes it from the facts
established so far).

Args (config keys, defaults in ``sequence/interactcomp/model/InteractCompPolicy.yaml``): hidden_size,
num_layers, num_heads, mlp_ratio, dropout.

Shapes: batch from :func:`~.tokens.encode` (B, L) -> action logits (B, 3), ask logits (B, A * V),
pointer logits (B, L) (``-inf`` off result tokens).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import DotProductScore, GraphAttention
from graphattn.registry import register_model

from .env import IDK, YES, Action, Observation
from .tokens import ACTION_INDEX, NUM_KINDS, PAD, RESULT, encode, vocab_size

__all__ = ["InteractCompPolicy", "PolicyBlock"]

_ACTIONS = {v: k for k, v in ACTION_INDEX.items()}


class PolicyBlock(nn.Module):
    """Pre-LN transformer block whose attention is one :class:`GraphAttention` (dense path, padding mask)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, dim, heads, update="project", dropout=dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, key_padding_mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.mlp(self.norm2(x))


@register_model("InteractCompPolicy", task="interactcomp")
class InteractCompPolicy(nn.Module):
    """See the module docstring."""

    def __init__(self, config: Mapping[str, Any], data) -> None:
        super().__init__()
        kb = data.kb
        self.kb = kb
        self.A, self.V = kb.num_attributes, kb.num_values
        dim, heads = int(config["hidden_size"]), int(config["num_heads"])
        self.term = nn.Embedding(vocab_size(self.A, self.V, kb.num_domains), dim, padding_idx=0)
        self.kind = nn.Embedding(NUM_KINDS, dim)
        self.rank = nn.Embedding(int(config["top_k"]) + 1, dim)
        self.step = nn.Embedding(int(config["max_rounds"]) + 2, dim)
        self.blocks = nn.ModuleList(PolicyBlock(dim, heads, float(config["mlp_ratio"]), float(config["dropout"]))
                                    for _ in range(int(config["num_layers"])))
        self.norm = nn.LayerNorm(dim)
        self.action_head = nn.Linear(dim, len(ACTION_INDEX))
        self.ask_head = nn.Linear(dim, self.A * self.V)
        self.pointer = DotProductScore(dim, dim, heads=1, head_dim=dim)

    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Token embeddings (B, L, D): kind + term + the sum of a result's attribute terms + rank + step."""
        x = self.kind(batch["kind"]) + self.term(batch["term"]) + self.term(batch["attrs"]).sum(-2)
        return x + self.rank(batch["rank"]) + self.step(batch["step"])

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        kind = batch["kind"]
        if kind.dim() != 2 or batch["attrs"].shape[:2] != kind.shape or batch["attrs"].shape[-1] != self.A:
            raise ValueError(f"expected kind (B, L) and attrs (B, L, {self.A}), got {tuple(kind.shape)} and "
                             f"{tuple(batch['attrs'].shape)}")
        h = self.embed(batch)
        valid = kind != PAD
        for block in self.blocks:
            h = block(h, valid)
        h = self.norm(h)
        q, k = self.pointer.project(h[:, :1], h)                               # (B, 1, 1, D), (B, L, 1, D)
        ptr = self.pointer.dense(q.transpose(1, 2), k.transpose(1, 2))[:, 0, 0]  # (B, L)
        ptr = ptr.masked_fill(kind != RESULT, float("-inf"))
        return {"action": self.action_head(h[:, 0]), "ask": self.ask_head(h[:, 0]), "pointer": ptr}

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Imitation loss: cross entropy of the action, of the asked term (ask steps) and of the answered
        entity (answer steps; the log of the summed pointer mass of its result tokens)."""
        out = self(batch)
        act, ask, ent = batch["act"], batch["ask_term"], batch["answer_entity"]
        loss_act = F.cross_entropy(out["action"], act)
        is_ask = ask >= 0
        loss_ask = F.cross_entropy(out["ask"][is_ask], ask[is_ask]) if is_ask.any() else out["ask"].sum() * 0
        is_ans = ent >= 0
        if is_ans.any():
            logp = out["pointer"][is_ans].log_softmax(-1)
            hit = batch["entity"][is_ans] == ent[is_ans, None]
            loss_ans = -logp.masked_fill(~hit, float("-inf")).logsumexp(-1).mean()
        else:
            loss_ans = out["pointer"].nan_to_num(0.0, neginf=0.0).sum() * 0
        total = loss_act + loss_ask + loss_ans
        return total, {"action_loss": loss_act.item(), "ask_loss": loss_ask.item(), "answer_loss": loss_ans.item()}

    # ------------------------------------------------------------------ acting in the harness

    def _ask_mask(self, obs: Observation) -> Tensor:
        """Terms the policy may ask: not a question / context attribute, not an attribute the user does not
        know or already confirmed, not a term asked before."""
        ok = torch.ones(self.A, self.V, dtype=torch.bool)
        for a, _ in list(obs.question) + list(obs.context or ()):
            ok[a] = False
        for t in obs.history:
            if t.action == "ask":
                ok[t.term[0], t.term[1]] = False
                if t.reply in (IDK, YES):
                    ok[t.term[0]] = False
        return ok.flatten()

    @torch.no_grad()
    def act_batch(self, observations: Sequence[Observation]) -> list[Action]:
        """Greedy actions among the allowed ones; confidence = the pointer's probability of the answer (x100)."""
        batch = encode(observations, self.kb)
        device = next(self.parameters()).device
        out = self({k: v.to(device) for k, v in batch.items()})
        logits, ask_logits, ptr = out["action"].cpu(), out["ask"].cpu(), out["pointer"].cpu()
        actions = []
        for b, obs in enumerate(observations):
            ask_ok = self._ask_mask(obs)
            has_result = bool((batch["kind"][b] == RESULT).any())
            allowed = [a for a in obs.allowed if (a != "answer" or has_result) and (a != "ask" or bool(ask_ok.any()))]
            if not allowed:
                allowed = list(obs.allowed)
            masked = torch.full((len(ACTION_INDEX),), float("-inf"))
            for a in allowed:
                masked[ACTION_INDEX[a]] = logits[b, ACTION_INDEX[a]]
            kind = _ACTIONS[int(masked.argmax())]
            if kind == "answer":
                if not has_result:
                    actions.append(Action("answer", entity=None, confidence=0.0))
                    continue
                probs = ptr[b].softmax(-1)
                mass: dict[int, float] = {}
                for j in torch.nonzero(batch["kind"][b] == RESULT).flatten().tolist():
                    e = int(batch["entity"][b, j])
                    mass[e] = mass.get(e, 0.0) + float(probs[j])
                entity = max(mass, key=mass.get)
                actions.append(Action("answer", entity=entity, confidence=100.0 * min(mass[entity], 1.0)))
            elif kind == "ask":
                term = int(ask_logits[b].masked_fill(~ask_ok, float("-inf")).argmax())
                actions.append(Action("ask", term=(term // self.V, term % self.V)))
            else:
                actions.append(Action("search"))
        return actions
