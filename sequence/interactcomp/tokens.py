"""The interaction history as tokens, for the learned InteractComp policy.

One token per fact, in dialogue order, after a ``DECIDE`` token (position 0) whose output chooses the next
action:

| kind | fields |
| --- | --- |
| DECIDE | step = the current round |
| DOMAIN | term = the domain |
| QUESTION | term = a public (attribute, value) of the question |
| SEARCH | step = its round |
| RESULT | attrs = the entity's 12 (attribute, value) terms, rank on the page, entity id (for the pointer) |
| ASK_YES / ASK_NO / ASK_IDK | term = the asked (attribute, value), the kind carries the reply |

Terms share one vocabulary (``1 + attribute * num_values + value``; domains after them; 0 = none), so a
result token and a reply about one of its attributes are made of the same embedding rows.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .env import IDK, NO, YES, Action, Observation
from .kb import KnowledgeBase

__all__ = ["PAD", "DECIDE", "DOMAIN", "QUESTION", "SEARCH", "RESULT", "ASK_YES", "ASK_NO", "ASK_IDK", "NUM_KINDS",
           "ACTION_INDEX", "encode", "action_targets", "vocab_size"]

PAD, DECIDE, DOMAIN, QUESTION, SEARCH, RESULT, ASK_YES, ASK_NO, ASK_IDK = range(9)
NUM_KINDS = 9
ACTION_INDEX = {"answer": 0, "ask": 1, "search": 2}
_REPLY_KIND = {YES: ASK_YES, NO: ASK_NO, IDK: ASK_IDK}


def vocab_size(num_attributes: int, num_values: int, num_domains: int) -> int:
    return 1 + num_attributes * num_values + num_domains


def _rows(obs: Observation, kb: KnowledgeBase) -> list[tuple[int, int, list[int], int, int, int]]:
    """(kind, term, attrs, rank, step, entity) per token."""
    A, V = kb.num_attributes, kb.num_values
    none = [0] * A
    rows = [(DECIDE, 0, none, 0, obs.round, -1), (DOMAIN, 1 + A * V + obs.domain, none, 0, 0, -1)]
    rows += [(QUESTION, 1 + a * V + v, none, 0, 0, -1) for a, v in obs.question]
    for step, turn in enumerate(obs.history, start=1):
        if turn.action == "search":
            rows.append((SEARCH, 0, none, 0, step, -1))
            for rank, e in enumerate(turn.result, start=1):
                attrs = [1 + a * V + int(kb.attributes[e, a]) for a in range(A)]
                rows.append((RESULT, 0, attrs, rank, step, int(e)))
        elif turn.action == "ask":
            a, v = turn.term
            rows.append((_REPLY_KIND[turn.reply], 1 + a * V + v, none, 0, step, -1))
    return rows


def encode(observations: Sequence[Observation], kb: KnowledgeBase, length: int | None = None) -> dict[str, torch.Tensor]:
    """Padded token tensors of a batch of observations.

    Shapes: kind, term, rank, step, entity (B, L); attrs (B, L, A). ``length`` pads to a fixed L (an error
    when a history is longer).
    """
    rows = [_rows(o, kb) for o in observations]
    L = max(len(r) for r in rows) if length is None else int(length)
    if length is not None and any(len(r) > L for r in rows):
        raise ValueError(f"a history has {max(len(r) for r in rows)} tokens, more than length={L}")
    B, A = len(rows), kb.num_attributes
    out = {"kind": torch.zeros(B, L, dtype=torch.long), "term": torch.zeros(B, L, dtype=torch.long),
           "attrs": torch.zeros(B, L, A, dtype=torch.long), "rank": torch.zeros(B, L, dtype=torch.long),
           "step": torch.zeros(B, L, dtype=torch.long), "entity": torch.full((B, L), -1, dtype=torch.long)}
    for b, r in enumerate(rows):
        n = len(r)
        kind, term, attrs, rank, step, entity = zip(*r)
        out["kind"][b, :n] = torch.tensor(kind)
        out["term"][b, :n] = torch.tensor(term)
        out["attrs"][b, :n] = torch.tensor(attrs)
        out["rank"][b, :n] = torch.tensor(rank)
        out["step"][b, :n] = torch.tensor(step)
        out["entity"][b, :n] = torch.tensor(entity)
    return out


def action_targets(actions: Sequence[Action], num_values: int) -> dict[str, torch.Tensor]:
    """Imitation targets: ``act`` (answer 0 / ask 1 / search 2), ``ask_term`` (a * V + v, or -1) and
    ``answer_entity`` (or -1). Shapes (B,)."""
    act = torch.tensor([ACTION_INDEX[a.kind] for a in actions], dtype=torch.long)
    ask = torch.tensor([a.term[0] * num_values + a.term[1] if a.kind == "ask" else -1 for a in actions],
                       dtype=torch.long)
    ent = torch.tensor([a.entity if a.kind == "answer" and a.entity is not None else -1 for a in actions],
                       dtype=torch.long)
    return {"act": act, "ask_term": ask, "answer_entity": ent}
