"""The synthetic target / distractor knowledge base of the InteractComp miniature.

Deng et al., "InteractComp: Evaluating Search Agents With Ambiguous Queries", arXiv 2510.24668
(https://arxiv.org/abs/2510.24668). The benchmark's 210 expert-written questions each describe a target
entity only through attributes it shares with a more popular distractor; a short hidden context holds the
target's distinguishing facts. Here the world is generated:

* ``num_entities`` entities in ``num_domains`` domains, each with ``num_attributes`` categorical attributes
  of ``num_values`` values. Inside a domain entities come in a few *families* (a prototype with each
  attribute resampled with probability ``mutation``), so look-alikes are common, as in the real domains.
  Every entity has a Zipf popularity ``1 / rank ** zipf`` over a random ranking of all entities.
* An :class:`Item` takes a target ``t`` and a more popular distractor ``d`` of the same domain that share
  at least ``min_shared`` attributes and differ in at least ``min_diff``. The question lists 4-6 of the
  shared attributes (so ``d`` always matches the question and, being more popular, hides ``t`` from a
  popularity-ranked answer); the hidden context lists 2-3 attributes on which ``t`` differs from ``d``,
  chosen so that question + context match ``t`` alone in the whole knowledge base (the full-context
  ceiling is 100 % by construction; the paper's LLMs reach ~71.5 % with the context).

A term ``(attribute, value)`` is numbered ``attribute * num_values + value``; domains are separate.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

__all__ = ["KnowledgeBase", "Item", "make_knowledge_base", "make_items", "DOMAIN_NAMES"]

DOMAIN_NAMES = ("film", "music", "game", "book", "sport", "science", "place", "history", "food")


@dataclass
class KnowledgeBase:
    """Entities with attributes, domains and popularity (the public world; no item's hidden context).

    Shapes: attributes (E, A) int64 in ``[0, num_values)``, domain (E,), popularity (E,) float.
    """

    attributes: np.ndarray
    domain: np.ndarray
    popularity: np.ndarray
    num_values: int
    names: list[str] = field(default_factory=list)

    @property
    def num_entities(self) -> int:
        return int(self.attributes.shape[0])

    @property
    def num_attributes(self) -> int:
        return int(self.attributes.shape[1])

    @property
    def num_domains(self) -> int:
        return int(self.domain.max()) + 1

    def consistent(self, domain: int, terms: list[tuple[int, int, bool]]) -> np.ndarray:
        """Ids of the entities of ``domain`` satisfying every term ``(attribute, value, positive)``
        (``positive=False``: the attribute is *not* that value), most popular first."""
        keep = self.domain == domain
        for a, v, positive in terms:
            if not 0 <= a < self.num_attributes or not 0 <= v < self.num_values:
                raise ValueError(f"term ({a}, {v}) outside {self.num_attributes} attributes x {self.num_values} values")
            keep &= (self.attributes[:, a] == v) if positive else (self.attributes[:, a] != v)
        ids = np.flatnonzero(keep)
        return ids[np.argsort(-self.popularity[ids], kind="stable")]


@dataclass(frozen=True)
class Item:
    """One ambiguous question: public ``question`` terms (attribute, value), the hidden ``context`` terms,
    the answer ``target`` and the popular look-alike ``distractor`` (entity ids)."""

    id: int
    domain: int
    question: tuple[tuple[int, int], ...]
    context: tuple[tuple[int, int], ...]
    target: int
    distractor: int


def make_knowledge_base(rng: np.random.Generator, num_entities: int = 300, num_domains: int = 9,
                        num_attributes: int = 12, num_values: int = 4, families: int = 4,
                        mutation: float = 0.4, zipf: float = 1.0) -> KnowledgeBase:
    """A random world (see the module docstring); attribute vectors are distinct within a domain."""
    if num_domains < 1 or num_entities < 2 * num_domains:
        raise ValueError(f"need at least 2 entities per domain, got {num_entities} entities in {num_domains} domains")
    if num_values < 2 or num_attributes < 6:
        raise ValueError(f"need >= 6 attributes of >= 2 values, got {num_attributes} x {num_values}")
    domain = np.arange(num_entities) % num_domains
    attributes = np.zeros((num_entities, num_attributes), dtype=np.int64)
    for d in range(num_domains):
        protos = rng.integers(0, num_values, size=(families, num_attributes))
        seen: set[tuple[int, ...]] = set()
        for e in np.flatnonzero(domain == d):
            while True:
                row = protos[rng.integers(families)].copy()
                flip = rng.random(num_attributes) < mutation
                row[flip] = rng.integers(0, num_values, size=int(flip.sum()))
                if tuple(row) not in seen:
                    break
            seen.add(tuple(row))
            attributes[e] = row
    rank = rng.permutation(num_entities) + 1
    popularity = 1.0 / rank.astype(np.float64) ** zipf
    count = np.zeros(num_domains, dtype=int)
    names = []
    for e in range(num_entities):
        d = int(domain[e])
        names.append(f"{DOMAIN_NAMES[d % len(DOMAIN_NAMES)]}{'' if d < len(DOMAIN_NAMES) else d}-{count[d]:03d}")
        count[d] += 1
    return KnowledgeBase(attributes, domain, popularity, num_values, names)


def _context_for(kb: KnowledgeBase, domain: int, question, target: int, diff: list[int],
                 rng: np.random.Generator):
    """2-3 attributes of ``diff`` (the size drawn first, the other size next) that, with the question, leave
    ``target`` alone; ``None`` if there are none."""
    base = [(a, v, True) for a, v in question]
    first = int(rng.integers(2, 4))
    for size in (first, 5 - first):
        combos = list(itertools.combinations(diff, size))
        rng.shuffle(combos)
        for combo in combos:
            terms = base + [(a, int(kb.attributes[target, a]), True) for a in combo]
            if len(kb.consistent(domain, terms)) == 1:
                return tuple(sorted((a, int(kb.attributes[target, a])) for a in combo))
    return None


def make_items(kb: KnowledgeBase, targets: np.ndarray, count: int, rng: np.random.Generator,
               min_shared: int = 4, min_diff: int = 2, start_id: int = 0, max_tries: int = 200) -> list[Item]:
    """``count`` items whose targets are drawn from ``targets`` (see the module docstring)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    items: list[Item] = []
    tries = 0
    while len(items) < count:
        tries += 1
        if tries > max_tries * max(count, 1):
            raise ValueError(f"could only build {len(items)} of {count} items from {len(targets)} targets; "
                             "use more entities or fewer attribute values")
        t = int(targets[rng.integers(len(targets))])
        dom = int(kb.domain[t])
        same = np.flatnonzero((kb.domain == dom) & (kb.popularity > kb.popularity[t]))
        shared = (kb.attributes[same] == kb.attributes[t]).sum(1)
        ok = same[(shared >= min_shared) & (kb.num_attributes - shared >= min_diff)]
        if len(ok) == 0:
            continue
        d = int(ok[rng.integers(len(ok))])
        agree = np.flatnonzero(kb.attributes[d] == kb.attributes[t])
        diff = [int(a) for a in np.flatnonzero(kb.attributes[d] != kb.attributes[t])]
        size = int(rng.integers(4, min(6, len(agree)) + 1))
        chosen = sorted(int(a) for a in rng.choice(agree, size=size, replace=False))
        question = tuple((a, int(kb.attributes[t, a])) for a in chosen)
        context = _context_for(kb, dom, question, t, diff, rng)
        if context is None:
            continue
        items.append(Item(start_id + len(items), dom, question, context, t, d))
    return items
