"""Progress bars and metric tables."""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["progress", "format_metrics_table", "AT_K"]

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", enabled: bool = True, **kwargs: Any) -> Iterator[T]:
    """``tqdm`` over ``iterable`` when ``enabled`` (the ``show_progress`` key), a plain iterator otherwise."""
    if not enabled:
        return iter(iterable)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return iter(tqdm(iterable, desc=desc, **kwargs))


AT_K = re.compile(r"^(?P<name>.+)@(?P<k>\d+)$")


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Align metrics as a table; ``name@k`` keys become one row per name and one column per ``k``.

    >>> print(format_metrics_table({"recall@10": 0.1, "recall@20": 0.2, "ndcg@10": 0.05, "ndcg@20": 0.07}))
    metric   @10     @20
    ndcg     0.0500  0.0700
    recall   0.1000  0.2000
    """
    if not metrics:
        return "(no metrics)"
    grouped: dict[str, dict[int, Any]] = {}
    plain: dict[str, Any] = {}
    for key, value in metrics.items():
        match = AT_K.match(str(key))
        if match:
            grouped.setdefault(match["name"], {})[int(match["k"])] = value
        else:
            plain[str(key)] = value
    blocks: list[str] = []
    if grouped:
        ks = sorted({k for row in grouped.values() for k in row})
        table = [["metric", *(f"@{k}" for k in ks)]]
        for name in sorted(grouped):
            table.append([name, *(_cell(grouped[name][k]) if k in grouped[name] else "-" for k in ks)])
        blocks.append(_align(table))
    if plain:
        table = [["metric", "value"]] + [[name, _cell(plain[name])] for name in sorted(plain)]
        blocks.append(_align(table))
    return "\n\n".join(blocks)


def _cell(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
