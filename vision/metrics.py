"""Metrics of the vision task: accuracy and macro-F1 (classification), SRCC, PLCC, RMSE, MAE (regression)."""

from __future__ import annotations

import math

import numpy as np
import torch

from vision.base import IGNORE_INDEX

__all__ = ["compute_metrics", "METRICS", "MINIMISED", "CLASSIFICATION_METRICS", "REGRESSION_METRICS", "DEFAULT_METRICS"]

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
REGRESSION_METRICS = ("srcc", "plcc", "rmse", "mae")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
MINIMISED = ("rmse", "mae")
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["srcc", "plcc", "rmse"]}


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's correlation needs."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(len(a), dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def compute_metrics(predictions: torch.Tensor, targets: torch.Tensor, names: list[str], task_type: str) -> dict[str, float]:
    """Metrics of one split.

    Classification: ``predictions`` are logits ``(N, C)`` (argmax taken) or class ids ``(N,)``; targets
    equal to ``IGNORE_INDEX`` are skipped. Regression: ``predictions`` and ``targets`` are flattened to ``(N,)``.
    """
    out: dict[str, float] = {}
    if task_type == "classification":
        pred = predictions.argmax(-1) if predictions.dim() > targets.dim() else predictions
        pred, tgt = pred.reshape(-1).long(), targets.reshape(-1).long()
        keep = tgt != IGNORE_INDEX
        pred, tgt = pred[keep], tgt[keep]
        for name in names:
            if name == "accuracy":
                out[name] = float((pred == tgt).float().mean()) if len(tgt) else float("nan")
            elif name == "macro_f1":
                f1s = []
                for c in torch.unique(torch.cat([tgt, pred])):
                    tp = float(((pred == c) & (tgt == c)).sum())
                    fp = float(((pred == c) & (tgt != c)).sum())
                    fn = float(((pred != c) & (tgt == c)).sum())
                    f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
                out[name] = float(np.mean(f1s)) if f1s else float("nan")
            else:
                raise ValueError(f"metric '{name}' is not a classification metric; use one of {', '.join(CLASSIFICATION_METRICS)}")
    else:
        p = predictions.detach().double().reshape(-1).cpu().numpy()
        t = targets.detach().double().reshape(-1).cpu().numpy()
        if p.shape != t.shape:
            raise ValueError(f"regression predictions have {p.size} values but targets {t.size}")
        for name in names:
            if name == "srcc":
                out[name] = _pearson(_ranks(p), _ranks(t))
            elif name == "plcc":
                out[name] = _pearson(p, t)
            elif name == "rmse":
                out[name] = float(np.sqrt(np.mean((p - t) ** 2)))
            elif name == "mae":
                out[name] = float(np.mean(np.abs(p - t)))
            else:
                raise ValueError(f"metric '{name}' is not a regression metric; use one of {', '.join(REGRESSION_METRICS)}")
    return out
