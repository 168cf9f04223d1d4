"""The InteractComp harness in miniature: the ``search`` / ``ask`` / ``answer`` tools, the grader, the
episode loop and the paper's metrics.

The official harness (FoundationAgents/InteractComp, ``core/agent.py``) runs a ReAct loop of at most
``max_rounds`` = 10 rounds, one JSON action per round, the last round forced to ``answer``; ``forced_ask``
rejects answers before ``enforce_ask_min`` = 5 asks. Here:

* ``search``: the query is the question's terms plus every fact the dialogue established (a "yes" reply
  is a positive term, a "no" a negative one); the engine returns the ``top_k`` = 5 *most popular*
  entities of the domain consistent with it, which reproduces the popularity bias of web search.
* ``ask(attribute, value)``: a closed yes/no question to the simulated user. :class:`Responder` reads
  only the item's hidden context: "yes" / "no" when the attribute is in it, "i don't know" otherwise
  (the official responder is an LLM told to answer from the context only).
* ``answer(entity, confidence)``: graded by :func:`grade`, an exact id match; the distractor is wrong
  (the official grader is a strict LLM judge with the same rule).

Modes (the harness's): ``normal`` (all tools; the policy chooses), ``forced_ask`` (an answer before
``enforce_ask_min`` asks is refused: the policy is told so through ``Observation.allowed`` and must pick
another action; the official harness instead spends a round on a rejection message), and
``with_context`` (the context is handed to the policy with the question, no hidden information).
The answer-only and search-only toolsets are properties of their policies (:mod:`.policies`).

Metrics (:func:`summarise`). The released code logs only confidence and action counts, so the paper's
derived metrics are defined here: ``accuracy``; ``interaction_rate`` = share of tasks with at least one
ask; ``ask_share`` = asks / all actions; ``rounds`` = mean actions per task; ``ece`` = expected calibration
error of the self-reported confidence (10 equal-width bins, in points of 100, as the paper's CE column);
``abs_calibration_error`` = mean |confidence - correct| (x100); ``distractor_rate`` = share of answers
naming the popular distractor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .kb import Item, KnowledgeBase

__all__ = ["YES", "NO", "IDK", "Turn", "Action", "Observation", "Episode", "SearchEngine", "Responder", "grade",
           "run_episodes", "summarise", "expected_calibration_error", "known_terms", "MODES"]

YES, NO, IDK = "yes", "no", "i don't know"
MODES = ("normal", "forced_ask", "with_context")
ACTIONS = ("answer", "ask", "search")


@dataclass(frozen=True)
class Turn:
    """One round: ``action`` ("search" | "ask" | "answer"), its argument and what came back.

    search: ``result`` = entity ids, most popular first. ask: ``term`` = (attribute, value), ``reply``.
    """

    action: str
    term: tuple[int, int] | None = None
    reply: str | None = None
    result: tuple[int, ...] = ()


@dataclass(frozen=True)
class Action:
    """What a policy does in a round: ``kind`` in ``ACTIONS``; ``term`` for ask; ``entity`` and
    ``confidence`` (0-100) for answer."""

    kind: str
    term: tuple[int, int] | None = None
    entity: int | None = None
    confidence: float = 0.0


@dataclass
class Observation:
    """What a policy sees: the question, the dialogue so far, the context (``with_context`` only), the round
    (1-based) and the actions it may take this round."""

    item_id: int
    domain: int
    question: tuple[tuple[int, int], ...]
    history: list[Turn]
    round: int
    allowed: tuple[str, ...]
    context: tuple[tuple[int, int], ...] | None = None

    @property
    def asks(self) -> int:
        return sum(t.action == "ask" for t in self.history)


class Policy(Protocol):
    def act_batch(self, observations: Sequence[Observation]) -> list[Action]: ...


def known_terms(obs: Observation) -> list[tuple[int, int, bool]]:
    """Search terms established so far: the question (and the context, when given) plus every yes / no reply."""
    terms = [(a, v, True) for a, v in obs.question]
    if obs.context:
        terms += [(a, v, True) for a, v in obs.context]
    for t in obs.history:
        if t.action == "ask" and t.reply in (YES, NO):
            terms.append((t.term[0], t.term[1], t.reply == YES))
    return terms


class SearchEngine:
    """Popularity-ranked retrieval over the knowledge base: the ``top_k`` most popular consistent entities."""

    def __init__(self, kb: KnowledgeBase, top_k: int = 5) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.kb, self.top_k = kb, int(top_k)

    def __call__(self, domain: int, terms: list[tuple[int, int, bool]]) -> tuple[int, ...]:
        return tuple(int(e) for e in self.kb.consistent(domain, terms)[: self.top_k])


class Responder:
    """The simulated user: answers a closed question about ``(attribute, value)`` from the hidden context only."""

    def __init__(self, num_attributes: int, num_values: int) -> None:
        self.num_attributes, self.num_values = num_attributes, num_values

    def __call__(self, item: Item, term: tuple[int, int]) -> str:
        a, v = term
        if not (0 <= a < self.num_attributes and 0 <= v < self.num_values):
            raise ValueError(f"ask: term {term} is outside {self.num_attributes} attributes x {self.num_values} values")
        known = dict(item.context)
        if a not in known:
            return IDK
        return YES if known[a] == v else NO


def grade(item: Item, entity: int | None) -> int:
    """1 for the target's id, 0 otherwise (the distractor and no answer included)."""
    return int(entity is not None and int(entity) == item.target)


@dataclass
class Episode:
    """One task's run: the dialogue, the answer, its grade and the action counts."""

    item: Item
    history: list[Turn] = field(default_factory=list)
    prediction: int | None = None
    confidence: float = 0.0
    score: int = 0
    invalid: int = 0
    answered: bool = False
    done: bool = False

    def counts(self) -> dict[str, int]:
        out = {a: sum(t.action == a for t in self.history) for a in ("ask", "search")}
        out["answer"] = int(self.answered)
        out["invalid"] = self.invalid
        return out


def _allowed(mode: str, round_: int, max_rounds: int, asks: int, enforce_ask_min: int) -> tuple[str, ...]:
    if round_ >= max_rounds:
        return ("answer",)
    if mode == "forced_ask" and asks < enforce_ask_min:
        return ("ask", "search")
    return ACTIONS


def run_episodes(items: Sequence[Item], policy: Policy, engine: SearchEngine, responder: Responder,
                 mode: str = "normal", max_rounds: int = 10, enforce_ask_min: int = 5) -> list[Episode]:
    """Run every item to its answer, all in lockstep (one batched policy call per round).

    An action outside ``Observation.allowed`` or with a bad argument counts as ``invalid`` and spends the
    round; in the last round only ``answer`` is allowed, and an episode that still has none scores 0.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if mode == "forced_ask" and max_rounds < enforce_ask_min + 1:
        raise ValueError(f"forced_ask needs max_rounds >= enforce_ask_min + 1, got {max_rounds} and {enforce_ask_min}")
    episodes = [Episode(item) for item in items]
    for round_ in range(1, max_rounds + 1):
        live = [e for e in episodes if not e.done]
        if not live:
            break
        obs = [Observation(e.item.id, e.item.domain, e.item.question, list(e.history), round_,
                           _allowed(mode, round_, max_rounds, sum(t.action == "ask" for t in e.history),
                                    enforce_ask_min),
                           e.item.context if mode == "with_context" else None) for e in live]
        actions = policy.act_batch(obs)
        if len(actions) != len(live):
            raise ValueError(f"policy returned {len(actions)} actions for {len(live)} observations")
        for e, o, act in zip(live, obs, actions):
            if act.kind not in o.allowed:
                e.invalid += 1
            elif act.kind == "answer":
                e.prediction, e.confidence = act.entity, float(np.clip(act.confidence, 0.0, 100.0))
                e.score, e.answered, e.done = grade(e.item, act.entity), True, True
            elif act.kind == "search":
                e.history.append(Turn("search", result=engine(e.item.domain, known_terms(o))))
            elif act.term is None:
                e.invalid += 1
            else:
                e.history.append(Turn("ask", term=tuple(act.term), reply=responder(e.item, act.term)))
            if round_ == max_rounds:
                e.done = True
    return episodes


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float], bins: int = 10) -> float:
    """ECE: sum over equal-width confidence bins of (share of samples) x |accuracy - mean confidence|.

    ``confidence`` in [0, 1]; a confidence of exactly 1 falls in the last bin.
    """
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D of one length, got {c.shape} and {y.shape}")
    if len(c) == 0:
        return float("nan")
    if c.min() < 0 or c.max() > 1:
        raise ValueError("confidence must lie in [0, 1]")
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(y[sel].mean() - c[sel].mean())
    return float(total)


def summarise(episodes: Sequence[Episode]) -> dict[str, float]:
    """The paper's metrics over a set of episodes (see the module docstring); rates in percent."""
    if not episodes:
        raise ValueError("no episodes to summarise")
    score = np.array([e.score for e in episodes], dtype=float)
    conf = np.array([e.confidence / 100.0 for e in episodes])
    counts = [e.counts() for e in episodes]
    actions = sum(c["answer"] + c["ask"] + c["search"] for c in counts)
    asks = sum(c["ask"] for c in counts)
    return {
        "accuracy": 100 * float(score.mean()),
        "interaction_rate": 100 * float(np.mean([c["ask"] > 0 for c in counts])),
        "ask_share": 100 * asks / max(actions, 1),
        "rounds": float(np.mean([c["answer"] + c["ask"] + c["search"] + c["invalid"] for c in counts])),
        "asks": float(np.mean([c["ask"] for c in counts])),
        "searches": float(np.mean([c["search"] for c in counts])),
        "invalid": float(np.mean([c["invalid"] for c in counts])),
        "ece": 100 * expected_calibration_error(conf, score),
        "abs_calibration_error": 100 * float(np.abs(conf - score).mean()),
        "confidence": 100 * float(conf.mean()),
        "distractor_rate": 100 * float(np.mean([e.prediction == e.item.distractor for e in episodes])),
    }
