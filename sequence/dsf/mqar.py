"""Multi-query associative recall (MQAR), generated with the semantics of Zoology's ``multiquery_ar``
(Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language Models", ICLR 2024).

An example opens with ``num_kv_pairs`` key-value pairs ``k_1 v_1 ... k_K v_K`` (distinct keys from
``[1, V/2)``, distinct values from ``[V/2, V)``); each key is asked again later at a gap drawn without
replacement from a power law ``p(g) ~ g^(power_a - 1)`` over even offsets; every other position holds a
random token. The label of a query position is the value of its key; all other labels are ``-100`` and
carry no loss. Requires ``4 * num_kv_pairs <= seq_len``, ``vocab_size > seq_len`` and an even ``seq_len``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["IGNORE", "RecallSplit", "RecallData", "multiquery_ar", "load_mqar"]

IGNORE = -100


def multiquery_ar(vocab_size: int, num_examples: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01,
                  seed: int = 0, random_non_queries: bool = True) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)``, both (num_examples, seq_len) int64 (see the module docstring)."""
    if seq_len % 2:
        raise ValueError(f"seq_len must be even, got {seq_len}")
    if vocab_size <= seq_len:
        raise ValueError(f"vocab_size ({vocab_size}) must exceed seq_len ({seq_len})")
    if num_kv_pairs < 1 or 4 * num_kv_pairs > seq_len:
        raise ValueError(f"num_kv_pairs must be in [1, seq_len / 4 = {seq_len // 4}], got {num_kv_pairs}")
    if not 0 < power_a <= 1:
        raise ValueError(f"power_a must be in (0, 1], got {power_a}")
    g = torch.Generator().manual_seed(int(seed))
    half, ctx = vocab_size // 2, 2 * num_kv_pairs
    keys = torch.rand(num_examples, half - 1, generator=g).argsort(-1)[:, :num_kv_pairs] + 1
    values = torch.rand(num_examples, vocab_size - half, generator=g).argsort(-1)[:, :num_kv_pairs] + half
    kvs = torch.stack([keys, values], -1).flatten(1)                      # k1 v1 k2 v2 ...
    space = (seq_len - ctx) // 2
    p = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = torch.multinomial((p / p.sum()).expand(num_examples, space), num_kv_pairs, replacement=False,
                             generator=g)                                 # (E, K)
    queries = torch.zeros(num_examples, seq_len - ctx + 1, dtype=torch.long)
    queries.scatter_(1, 2 * gaps, keys)
    examples = torch.cat([kvs, queries], 1)                               # (E, seq_len + 1)
    labels = torch.full_like(examples, IGNORE)
    labels.scatter_(1, 2 * gaps + ctx + 1, values)
    inputs, labels = examples[:, :-1].clone(), labels[:, 1:].clone()      # next-token targets
    if random_non_queries:
        empty = inputs == 0
        inputs[empty] = torch.randint(vocab_size, inputs.shape, generator=g)[empty]
    return inputs, labels


@dataclass
class RecallSplit:
    inputs: Tensor   # (E, T) int64
    labels: Tensor   # (E, T) int64, IGNORE where no loss

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass
class RecallData:
    name: str
    vocab_size: int
    seq_len: int
    train: RecallSplit
    valid: RecallSplit
    test: RecallSplit

    def split(self, name: str) -> RecallSplit:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, valid or test")
        return getattr(self, name)

    def __str__(self) -> str:
        return (f"{self.name}: vocab {self.vocab_size}, seq_len {self.seq_len}, "
                f"{len(self.train)}/{len(self.valid)}/{len(self.test)} train/valid/test examples")


def load_mqar(config: Mapping[str, Any]) -> RecallData:
    """The ``mqar`` dataset from config keys vocab_size, seq_len, num_kv_pairs, power_a, train_size,
    valid_size, test_size, mqar_seed (train / valid / test use seeds mqar_seed, +1, +2)."""
    args = dict(vocab_size=int(config["vocab_size"]), seq_len=int(config["seq_len"]),
                num_kv_pairs=int(config["num_kv_pairs"]), power_a=float(config["power_a"]))
    seed = int(config["mqar_seed"])
    splits = [RecallSplit(*multiquery_ar(num_examples=int(config[f"{s}_size"]), seed=seed + i, **args))
              for i, s in enumerate(("train", "valid", "test"))]
    return RecallData(f"mqar({args['num_kv_pairs']} kv pairs)", args["vocab_size"], args["seq_len"], *splits)
