"""Scripted InteractComp policies: answer-only, search-only, information-gain asker, over-confident guesser.

Every policy answers an :class:`~.env.Observation` with an :class:`~.env.Action` and keeps no state between
rounds (everything it knows is in the dialogue). Entities reach a policy only through ``search`` results,
whose attributes it reads as a search agent reads snippets; the answer-only policy, which may not search,
instead draws on "parametric knowledge": the most popular entity consistent with the question.

The information-gain asker holds the candidates = the entities of the last search consistent with every fact
established since (a "yes" keeps those with the value, a "no" removes them). It asks the closed question
``(attribute, value)`` whose answer has the largest entropy over the candidates (uniform prior:
``H(p)`` with ``p`` the share of candidates having the value; the answer is deterministic given the entity,
so this entropy is the expected information gain), never an attribute the user said it does not know, and
answers once one candidate is left (searching again when the last page was full and facts were added since,
so a unique survivor is checked against the whole knowledge base) or no question splits the candidates. Its
confidence is the popularity share of its answer among the candidates. In the graph view of the spec this
is a greedy cut on the entity - attribute bipartite graph: each reply deletes the entity nodes on one side.

The over-confident policy reasons the same way but answers as soon as it holds a candidate (at 95 %
confidence); when forced to ask it asks the information-gain question, so ``forced_ask`` reveals what it
could have done (the paper's finding: forcing interaction lifts accuracy).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .env import IDK, Action, Observation, known_terms
from .kb import KnowledgeBase

__all__ = ["AnswerOnly", "SearchOnly", "InfoGainAsker", "OverConfident", "candidates", "best_question",
           "entropy"]


def entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits, elementwise (0 at p in {0, 1})."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(q > 0, q * np.log2(q), 0.0))
    return h


def _satisfies(kb: KnowledgeBase, ids: np.ndarray, terms) -> np.ndarray:
    keep = np.ones(len(ids), dtype=bool)
    for a, v, positive in terms:
        col = kb.attributes[ids, a] == v
        keep &= col if positive else ~col
    return ids[keep]


def candidates(kb: KnowledgeBase, obs: Observation, top_k: int = 5) -> tuple[np.ndarray, bool]:
    """``(ids, stale)``: the entities of the last search consistent with every known fact (most popular first),
    and whether a new search is due (none yet, nobody left, or a full page narrowed by later facts to one)."""
    searches = [i for i, t in enumerate(obs.history) if t.action == "search"]
    if not searches:
        return np.zeros(0, dtype=np.int64), True
    last = searches[-1]
    ids = _satisfies(kb, np.asarray(obs.history[last].result, dtype=np.int64), known_terms(obs))
    facts_since = any(t.action == "ask" and t.reply != IDK for t in obs.history[last + 1:])
    full_page = len(obs.history[last].result) >= top_k
    stale = len(ids) == 0 or (len(ids) == 1 and full_page and facts_since)
    return ids, stale


def best_question(kb: KnowledgeBase, obs: Observation, ids: np.ndarray) -> tuple[tuple[int, int] | None, float]:
    """The ``(attribute, value)`` of largest information gain over ``ids`` (ties: lowest attribute, then value),
    skipping attributes the user does not know, question attributes and terms already asked; with no
    splitting question, an unasked attribute at the most popular candidate's value (gain 0); ``None`` when
    nothing is left to ask."""
    blocked = {a for a, _ in obs.question} | {t.term[0] for t in obs.history if t.action == "ask" and t.reply == IDK}
    blocked |= {t.term[0] for t in obs.history if t.action == "ask" and t.reply == "yes"}
    if obs.context:
        blocked |= {a for a, _ in obs.context}
    asked = {tuple(t.term) for t in obs.history if t.action == "ask"}
    A, V = kb.num_attributes, kb.num_values
    allowed = np.ones((A, V), dtype=bool)
    allowed[sorted(blocked)] = False
    for a, v in asked:
        allowed[a, v] = False
    if not allowed.any():
        return None, 0.0
    if len(ids):
        share = np.eye(V)[kb.attributes[ids]].mean(0)                       # (A, V): share of candidates with a = v
        gains = entropy(share)
    else:
        gains = np.zeros((A, V))
    gains = np.where(allowed, gains, -1.0).ravel()
    flat = int(np.argmax(gains))                                           # first maximum: lowest a, then v
    best, gain = (flat // V, flat % V), float(gains[flat])
    if best is not None and gain <= 0 and len(ids):
        top = int(ids[0])
        for a in range(kb.num_attributes):
            if a not in blocked and (a, int(kb.attributes[top, a])) not in asked:
                return (a, int(kb.attributes[top, a])), 0.0
    return best, max(gain, 0.0)


class _Scripted:
    def __init__(self, kb: KnowledgeBase, top_k: int = 5) -> None:
        self.kb, self.top_k = kb, int(top_k)

    def act_batch(self, observations: Sequence[Observation]) -> list[Action]:
        return [self.act(o) for o in observations]

    def act(self, obs: Observation) -> Action:
        raise NotImplementedError

    def _share(self, ids: np.ndarray) -> float:
        pop = self.kb.popularity[ids]
        return 100.0 * float(pop[0] / pop.sum())


class AnswerOnly(_Scripted):
    """Answers at once, from "memory": the most popular entity consistent with the question, at ``confidence``."""

    def __init__(self, kb: KnowledgeBase, confidence: float = 90.0) -> None:
        super().__init__(kb)
        self.confidence = float(confidence)

    def act(self, obs: Observation) -> Action:
        ids = self.kb.consistent(obs.domain, known_terms(obs))
        return Action("answer", entity=int(ids[0]) if len(ids) else None, confidence=self.confidence)


class SearchOnly(_Scripted):
    """Searches the question once, then answers the top result (confidence: its popularity share of the page)."""

    def act(self, obs: Observation) -> Action:
        ids, stale = candidates(self.kb, obs, self.top_k)
        if stale and "search" in obs.allowed and not any(t.action == "search" for t in obs.history):
            return Action("search")
        if "answer" not in obs.allowed:
            return Action("search")
        return Action("answer", entity=int(ids[0]) if len(ids) else None,
                      confidence=self._share(ids) if len(ids) else 0.0)


class InfoGainAsker(_Scripted):
    """Asks the information-gain question until one candidate is left (see the module docstring)."""

    overconfident = False

    def act(self, obs: Observation) -> Action:
        ids, stale = candidates(self.kb, obs, self.top_k)
        if stale and "search" in obs.allowed and not self._searched_with_current_facts(obs):
            return Action("search")
        question, gain = best_question(self.kb, obs, ids)
        decided = len(ids) <= 1 or gain <= 0 or self.overconfident
        if "answer" in obs.allowed and (decided or question is None or "ask" not in obs.allowed):
            if not len(ids):
                return Action("answer", entity=None, confidence=0.0)
            return Action("answer", entity=int(ids[0]), confidence=95.0 if self.overconfident else self._share(ids))
        if question is not None and "ask" in obs.allowed:
            return Action("ask", term=question)
        return Action("search")

    @staticmethod
    def _searched_with_current_facts(obs: Observation) -> bool:
        searches = [i for i, t in enumerate(obs.history) if t.action == "search"]
        if not searches:
            return False
        last = searches[-1]
        return not any(t.action == "ask" and t.reply != IDK for t in obs.history[last + 1:])


class OverConfident(InfoGainAsker):
    """Same reasoning as :class:`InfoGainAsker`, but answers the top candidate as soon as it has one (95 %)."""

    overconfident = True
