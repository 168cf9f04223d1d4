"""The planted-cue sentiment task (Kitada & Iyatomi's synthetic stand-in for SST, see
``/work/shared/papers/attention-at.md``), generated on demand.

Tokens are drawn uniformly from a vocabulary of ``cue_vocab_size - 1`` words (id 0 is padding); ``cue_pos``
of them are positive cue words and ``cue_neg`` negative ones. The clean label is
``sign(#positive cues - #negative cues)``; sentences with a tie are redrawn; then a fraction ``label_noise``
of labels (in every split) is flipped. The cue words are the ground-truth important tokens. One generator
seeded with ``data_seed`` draws the cue words and the train, valid and test splits in that order.
Keys (``sequence/text/dataset/planted-cue.yaml``): cue_vocab_size, cue_min_len, cue_max_len, cue_pos,
cue_neg, label_noise, train_size, valid_size, test_size, data_seed.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphattn.registry import register_dataset

from .data import TextData, TextSplit

__all__ = ["generate_planted_cue", "load_planted_cue"]


def _check(config: Mapping[str, Any]) -> None:
    vocab, lo, hi = int(config["cue_vocab_size"]), int(config["cue_min_len"]), int(config["cue_max_len"])
    pos, neg, noise = int(config["cue_pos"]), int(config["cue_neg"]), float(config["label_noise"])
    if not 1 <= lo <= hi:
        raise ValueError(f"cue_min_len / cue_max_len: need 1 <= cue_min_len <= cue_max_len, got {lo}, {hi}")
    if pos < 1 or neg < 1 or pos + neg > vocab - 1:
        raise ValueError(f"cue_pos / cue_neg: need at least one cue word of each sign and at most cue_vocab_size - 1 "
                         f"= {vocab - 1} in all, got {pos} + {neg}")
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"label_noise: expected a fraction in [0, 0.5), got {noise}")
    for key in ("train_size", "valid_size", "test_size"):
        if int(config[key]) < 1:
            raise ValueError(f"{key}: expected an int >= 1, got {config[key]}")


def _sentences(n: int, sign: np.ndarray, lo: int, hi: int, noise: float, rng: np.random.Generator) -> TextSplit:
    tokens, lengths, labels, drawn = [], [], [], 0
    while drawn < n:
        m = 2 * (n - drawn) + 16
        length = rng.integers(lo, hi + 1, m)
        tok = rng.integers(1, len(sign), (m, hi))
        tok[np.arange(hi) >= length[:, None]] = 0
        balance = sign[tok].sum(1)                            # sign[0] = 0: padding counts for nothing
        keep = np.flatnonzero(balance != 0)[: n - drawn]      # ties removed
        tokens.append(tok[keep])
        lengths.append(length[keep])
        labels.append(balance[keep] > 0)
        drawn += len(keep)
    tok, length, label = np.concatenate(tokens), np.concatenate(lengths), np.concatenate(labels)
    label ^= rng.random(n) < noise
    t = int(length.max())
    tok = torch.from_numpy(tok[:, :t].astype(np.int64))
    return TextSplit(tok, torch.from_numpy(length.astype(np.int64)), torch.from_numpy(label.astype(np.float32)),
                     torch.from_numpy(sign[tok.numpy()] != 0))


def generate_planted_cue(config: Mapping[str, Any]) -> TextData:
    """The three splits (see the module docstring)."""
    _check(config)
    rng = np.random.default_rng(int(config["data_seed"]))
    vocab, pos, neg = int(config["cue_vocab_size"]), int(config["cue_pos"]), int(config["cue_neg"])
    words = rng.permutation(np.arange(1, vocab))[: pos + neg]
    sign = np.zeros(vocab, dtype=np.int64)
    sign[words[:pos]], sign[words[pos:]] = 1, -1
    lo, hi, noise = int(config["cue_min_len"]), int(config["cue_max_len"]), float(config["label_noise"])
    splits = [_sentences(int(config[f"{s}_size"]), sign, lo, hi, noise, rng) for s in ("train", "valid", "test")]
    return TextData("planted-cue", *splits, vocab_size=vocab)


def load_planted_cue(config: Mapping[str, Any]) -> TextData:
    return generate_planted_cue(config)


register_dataset("planted-cue", task="text_classification", loader=load_planted_cue,
                 description="synthetic sentiment: label = sign(#positive - #negative cue words), generated")
