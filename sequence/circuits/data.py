"""Synthetic prompts of the circuit-reuse study (Merullo, Eickhoff, Pavlick, ICLR 2024), word-level tokens.

Three tasks, each with its corruption (the clean and corrupted prompts have the same length, and the metric
of both is read with the *clean* prompt's answer and alternative):

- ``ioi``: "When A and B went to the PLACE , B gave a OBJECT to" -> A (ABBA and BABA orders, names drawn
  without replacement). Corruption (the repo's ``gen_flipped_prompts(("S2", "IO"))``): the second mention
  of the subject becomes the IO name, so the right answer flips. Metric: logit(IO) - logit(S).
- ``colored_objects``: a 1-shot prompt "Q: On the SURFACE , PHRASE a C1 O1 , a C2 O2 , and a C3 O3 . What
  color is the Ok ? \\n A: Ck \\n Q: ... What color is the Oj ? \\n A:" (3 objects of 17, colors drawn
  without replacement from 8, surface of 3, phrase "there is" / "you see" / "I see"); the answer is the
  capitalised color (a separate token, as " Red" is in GPT-2's vocabulary). Corruption ("mindiff"): the
  final question names another object of the same scene. Metric: logit(clean color) - logit(corrupt color).
- ``greater_than`` (control task with a different algorithm, Hanna et al. 2023): "The war lasted from the
  year 17 YY to the year 17" -> any YY' > YY (trained on a uniform draw). Corruption: YY -> 01. Metric:
  mean logit of the years > YY minus that of the years <= YY.

Each batch is a dict: ``tokens`` / ``corrupt`` (B, L) long, ``answer`` (B,) the training target, ``good`` /
``bad`` (B, V) bool masks of the metric's two sides, ``last`` (B,) the index of the answer-predicting token
(L - 1 within one task; the training mix right-pads with PAD), and task-specific positions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from graphattn.registry import register_dataset

__all__ = ["VOCAB", "TOKEN", "TASKS", "sample_task", "sample_mix", "decode", "CircuitData", "load_circuit_mix"]

NAMES = ("Mary John Alice Bob Tom Anna Paul Kate Mark Lisa James Sarah David Emma Peter Laura Chris Julia Dan "
         "Amy Sam Rose Jack Lucy Mike Grace Ben Claire Tim Helen Adam Eva Nick Jane Ryan Kelly Steve Sophie "
         "Joe Linda Carl Nina Fred Ruth Ian Beth Leo Diana Max Ella").split()
PLACES = "store park school garden beach office market station house hospital".split()
IOI_OBJECTS = "ring kiss bone basketball computer necklace drink snack apple book".split()
COLORS = "red orange yellow green blue purple brown black".split()
CO_OBJECTS = ("pencil notebook pen cup plate jug mug puzzle textbook leash necklace bracelet bottle ball "
              "envelope lighter bowl").split()
SURFACES = "table desk floor".split()
PHRASES = (("there", "is"), ("you", "see"), ("I", "see"))
YEARS = [f"{y:02d}" for y in range(100)]
WORDS = ("When and went to the , gave a Q: On . What color is ? \n A: The war lasted from year 17 "
         "there you I see").split(" ")

VOCAB: tuple[str, ...] = tuple(dict.fromkeys(
    ["<pad>"] + WORDS + ["\n"] + NAMES + PLACES + IOI_OBJECTS + COLORS + [c.capitalize() for c in COLORS]
    + CO_OBJECTS + SURFACES + YEARS))
TOKEN: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
PAD = 0
TASKS = ("ioi", "colored_objects", "greater_than")


def decode(tokens: Tensor) -> str:
    return " ".join(VOCAB[int(t)] for t in tokens if int(t) != PAD)


def _ids(words) -> list[int]:
    return [TOKEN[w] for w in words]


def _pick(n: int, k: int, g: torch.Generator) -> list[int]:
    return torch.randperm(n, generator=g)[:k].tolist()


def _onehot(index: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(index, len(VOCAB)).bool()


def _ioi(batch: int, g: torch.Generator) -> dict[str, Tensor]:
    toks, corr, io, s, pos = [], [], [], [], []
    for _ in range(batch):
        a, b = (NAMES[i] for i in _pick(len(NAMES), 2, g))
        place = PLACES[int(torch.randint(len(PLACES), (1,), generator=g))]
        obj = IOI_OBJECTS[int(torch.randint(len(IOI_OBJECTS), (1,), generator=g))]
        abba = bool(torch.rand(1, generator=g) < 0.5)
        first, second = (a, b) if abba else (b, a)                          # IO = a, S = b
        words = ["When", first, "and", second, "went", "to", "the", place, ",", b, "gave", "a", obj, "to"]
        toks.append(_ids(words))
        words[9] = a                                                         # S2 -> IO
        corr.append(_ids(words))
        io.append(TOKEN[a])
        s.append(TOKEN[b])
        pos.append([1 if abba else 3, 3 if abba else 1, 9])                  # IO, S1, S2
    io_t, s_t = torch.tensor(io), torch.tensor(s)
    return {"tokens": torch.tensor(toks), "corrupt": torch.tensor(corr), "answer": io_t, "wrong": s_t,
            "good": _onehot(io_t), "bad": _onehot(s_t), "positions": torch.tensor(pos)}


def _scene(g: torch.Generator):
    colors = [COLORS[i] for i in _pick(len(COLORS), 3, g)]
    objects = [CO_OBJECTS[i] for i in _pick(len(CO_OBJECTS), 3, g)]
    surface = SURFACES[int(torch.randint(len(SURFACES), (1,), generator=g))]
    phrase = PHRASES[int(torch.randint(len(PHRASES), (1,), generator=g))]
    words = ["Q:", "On", "the", surface, ",", *phrase, "a", colors[0], objects[0], ",", "a", colors[1], objects[1],
             ",", "and", "a", colors[2], objects[2], ".", "What", "color", "is", "the"]
    return words, colors, objects


CO_COLOR_SLOTS = (8, 12, 17)   # color positions inside one question block
CO_BLOCK = 30                  # tokens of the solved shot: 28 question tokens, the answer and "\n"


def _colored_objects(batch: int, g: torch.Generator) -> dict[str, Tensor]:
    toks, corr, ans, wrong, which = [], [], [], [], []
    for _ in range(batch):
        shot, c0, o0 = _scene(g)
        k = int(torch.randint(3, (1,), generator=g))
        shot = shot + [o0[k], "?", "\n", "A:", c0[k].capitalize(), "\n"]
        query, colors, objects = _scene(g)
        j, j2 = _pick(3, 2, g)
        clean = shot + query + [objects[j], "?", "\n", "A:"]
        bad = shot + query + [objects[j2], "?", "\n", "A:"]
        toks.append(_ids(clean))
        corr.append(_ids(bad))
        ans.append(TOKEN[colors[j].capitalize()])
        wrong.append(TOKEN[colors[j2].capitalize()])
        which.append(j)
    a, w = torch.tensor(ans), torch.tensor(wrong)
    color_pos = torch.tensor([CO_BLOCK + p for p in CO_COLOR_SLOTS]).expand(batch, 3)
    return {"tokens": torch.tensor(toks), "corrupt": torch.tensor(corr), "answer": a, "wrong": w,
            "good": _onehot(a), "bad": _onehot(w), "color_positions": color_pos.clone(),
            "answer_slot": torch.tensor(which)}


def _greater_than(batch: int, g: torch.Generator) -> dict[str, Tensor]:
    yy = torch.randint(2, 98, (batch,), generator=g)
    answer = yy + 1 + (torch.rand(batch, generator=g) * (99 - yy)).long()   # uniform over YY+1 .. 99
    stem = _ids(["The", "war", "lasted", "from", "the", "year", "17"])
    tail = _ids(["to", "the", "year", "17"])
    toks = torch.tensor([stem + [TOKEN[YEARS[int(y)]]] + tail for y in yy])
    corr = toks.clone()
    corr[:, len(stem)] = TOKEN["01"]
    year_ids = torch.tensor([TOKEN[y] for y in YEARS])
    good = torch.zeros(batch, len(VOCAB), dtype=torch.bool)
    bad = torch.zeros_like(good)
    later = torch.arange(100)[None] > yy[:, None]                             # (B, 100)
    good[:, year_ids] = later
    bad[:, year_ids] = ~later
    return {"tokens": toks, "corrupt": corr, "answer": year_ids[answer], "good": good, "bad": bad,
            "yy": yy}


_GENERATORS = {"ioi": _ioi, "colored_objects": _colored_objects, "greater_than": _greater_than}


def sample_task(task: str, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """``batch`` prompts of one task (same length, ``last`` = L - 1)."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown circuit task {task!r}; expected one of {list(_GENERATORS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    out = _GENERATORS[task](batch, g)
    out["last"] = torch.full((batch,), out["tokens"].shape[1] - 1)
    return out


def sample_mix(batch: int, generator: torch.Generator, weights: Mapping[str, float]) -> dict[str, Tensor]:
    """A training batch mixing the tasks in proportion ``weights``, right-padded with PAD."""
    total = sum(weights.values())
    counts = {t: int(round(batch * w / total)) for t, w in weights.items() if w > 0}
    parts = [sample_task(t, n, generator) for t, n in counts.items() if n > 0]
    length = max(p["tokens"].shape[1] for p in parts)
    tokens = torch.cat([torch.nn.functional.pad(p["tokens"], (0, length - p["tokens"].shape[1]), value=PAD)
                        for p in parts])
    # the solved shot's answer of a CO prompt is a second training target (predicted at its "A:", index
    # CO_BLOCK - 3); other prompts have none (-1)
    shot = torch.cat([torch.full((len(p["answer"]),), CO_BLOCK - 3 if "answer_slot" in p else -1) for p in parts])
    shot_answer = torch.where(shot >= 0, tokens[torch.arange(len(tokens)), (shot + 1).clamp_min(0)], -1)
    return {"tokens": tokens, "answer": torch.cat([p["answer"] for p in parts]),
            "last": torch.cat([p["last"] for p in parts]), "shot": shot, "shot_answer": shot_answer}


@dataclass
class CircuitData:
    """The training mix and the fixed evaluation prompts (``eval_sets[split][task] -> batch``)."""

    weights: dict[str, float]
    eval_sets: dict[str, dict[str, dict[str, Tensor]]] = field(default_factory=dict)
    vocab_size: int = len(VOCAB)
    max_len: int = 64

    kind = "circuits"

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
        return sample_mix(batch, generator, self.weights)

    def __str__(self) -> str:
        return f"circuit-mix: tasks {self.weights}, vocabulary {self.vocab_size}"


def load_circuit_mix(config: Mapping[str, Any]) -> CircuitData:
    weights = {t: float(config[f"circ_weight_{t}"]) for t in TASKS}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"circ_weight_* must be >= 0 with a positive sum, got {weights}")
    data = CircuitData(weights)
    g = torch.Generator().manual_seed(int(config["data_seed"]))
    for split, size in (("valid", int(config["circ_valid_size"])), ("test", int(config["circ_test_size"]))):
        data.eval_sets[split] = {t: sample_task(t, size, g) for t in TASKS}
    return data


register_dataset("circuit-mix", task="circuits", loader=load_circuit_mix,
                 description="IOI-like, Colored-Objects-like and greater-than prompts (Merullo et al. 2024)")
