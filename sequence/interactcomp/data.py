"""Dataset ``interactcomp``: a generated knowledge base, its ambiguous items and scripted demonstrations.

The loader builds the world of :mod:`.kb` from ``kb_seed``, splits the entities into disjoint target pools
(60 / 20 / 20 % for train / valid / test, so test questions are about entities never asked about in
training; the distractors may be any entity) and makes ``train_items`` / ``valid_items`` / ``test_items``
items (the benchmark has 210). For imitation every item is then played by one expert, the over-confident
guesser with probability ``overconfident_share``, else the information-gain asker (:mod:`.policies`), and
each round's (observation, action) becomes a training example (:mod:`.tokens`).

Keys (``sequence/interactcomp/dataset/interactcomp.yaml``): kb_seed, num_entities, num_domains,
num_attributes, num_values, families, mutation, zipf, min_shared, min_diff, train_items, valid_items,
test_items; from the task: overconfident_share, max_rounds, top_k.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from graphattn.registry import register_dataset

from .env import Action, Observation, Responder, SearchEngine, run_episodes
from .kb import Item, KnowledgeBase, make_items, make_knowledge_base
from .policies import InfoGainAsker, OverConfident
from .tokens import action_targets, encode

__all__ = ["InteractCompData", "load_interactcomp", "demonstrations", "SPLITS"]

SPLITS = ("train", "valid", "test")


@dataclass
class InteractCompData:
    """The world, the items of each split and the imitation examples of each split (token tensors + targets)."""

    kb: KnowledgeBase
    items: dict[str, list[Item]]
    demos: dict[str, dict[str, torch.Tensor]]
    name: str = "interactcomp"

    def __str__(self) -> str:
        sizes = ", ".join(f"{s} {len(self.items[s])} items / {len(self.demos[s]['act'])} steps" for s in SPLITS)
        return (f"{self.name}: {self.kb.num_entities} entities in {self.kb.num_domains} domains, "
                f"{self.kb.num_attributes} attributes x {self.kb.num_values} values; {sizes}")


class _Recorder:
    """Plays each item with its assigned expert and records every (observation, action)."""

    def __init__(self, experts: Mapping[int, Any]) -> None:
        self.experts, self.steps = experts, []

    def act_batch(self, observations: Sequence[Observation]) -> list[Action]:
        actions = [self.experts[o.item_id].act(o) for o in observations]
        self.steps.extend(zip(observations, actions))
        return actions


def demonstrations(kb: KnowledgeBase, items: Sequence[Item], overconfident_share: float, rng: np.random.Generator,
                   max_rounds: int = 10, top_k: int = 5) -> tuple[list[Observation], list[Action]]:
    """Each item played by the over-confident expert (probability ``overconfident_share``) or the asker."""
    if not 0.0 <= overconfident_share <= 1.0:
        raise ValueError(f"overconfident_share must lie in [0, 1], got {overconfident_share}")
    oc, ig = OverConfident(kb, top_k), InfoGainAsker(kb, top_k)
    experts = {it.id: (oc if rng.random() < overconfident_share else ig) for it in items}
    rec = _Recorder(experts)
    run_episodes(items, rec, SearchEngine(kb, top_k), Responder(kb.num_attributes, kb.num_values),
                 "normal", max_rounds)
    return [o for o, _ in rec.steps], [a for _, a in rec.steps]


def load_interactcomp(config: Mapping[str, Any]) -> InteractCompData:
    rng = np.random.default_rng(int(config["kb_seed"]))
    kb = make_knowledge_base(rng, int(config["num_entities"]), int(config["num_domains"]),
                             int(config["num_attributes"]), int(config["num_values"]), int(config["families"]),
                             float(config["mutation"]), float(config["zipf"]))
    order = rng.permutation(kb.num_entities)
    cut = [int(0.6 * len(order)), int(0.8 * len(order))]
    pools = dict(zip(SPLITS, np.split(order, cut)))
    items, demos, start = {}, {}, 0
    for split in SPLITS:
        items[split] = make_items(kb, pools[split], int(config[f"{split}_items"]), rng, int(config["min_shared"]),
                                  int(config["min_diff"]), start_id=start)
        start += len(items[split])
        obs, actions = demonstrations(kb, items[split], float(config["overconfident_share"]), rng,
                                      int(config["max_rounds"]), int(config["top_k"]))
        demos[split] = {**encode(obs, kb), **action_targets(actions, kb.num_values)}
    return InteractCompData(kb, items, demos)


register_dataset("interactcomp", task="interactcomp", loader=load_interactcomp,
                 description="generated InteractComp miniature: target/distractor KB, ambiguous items, demos")
