"""Per-task model selection for a multi-task run on the :class:`~graphattn.training.Trainer`.

The Trainer selects one epoch by the joint validation metric. :class:`PerTaskSelection` hooks its evaluations
(``trainer.on_evaluation``): after each validation it also evaluates the test split (recorded, never used for
selection), keeps training while *any* task's validation AUC still improves, and at the end picks each task's
head at that task's best validation epoch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .task import evaluate_split

__all__ = ["PerTaskSelection", "infnet_beats_baselines"]


class PerTaskSelection:
    """Attach to ``trainer`` (a multi-task run with ``tasks``); after ``trainer.fit()``, :meth:`result` gives the
    per-task test AUCs and epochs. ``trace`` holds ``{"epoch", "valid", "test"}`` per evaluation."""

    def __init__(self, trainer: Any, tasks: list[str], eval_batch_size: int) -> None:
        self.trainer, self.tasks, self.eval_batch_size = trainer, list(tasks), int(eval_batch_size)
        self.trace: list[dict] = []
        self.best = {t: -1.0 for t in self.tasks}
        trainer.on_evaluation = self

    def __call__(self, epoch: int, valid: dict) -> None:
        test = evaluate_split(self.trainer.model, self.trainer.task.splits["test"], self.tasks, self.eval_batch_size)
        self.trace.append({"epoch": epoch, "valid": {k: float(v) for k, v in valid.items()},
                           "test": {k: float(v) for k, v in test.items()}})
        improved = [t for t in self.tasks if valid[f"auc_{t}"] > self.best[t]]
        for t in improved:
            self.best[t] = valid[f"auc_{t}"]
        if improved:                      # per-task early stopping: go on while any task still improves
            self.trainer.stopper.reset_patience()

    def result(self) -> tuple[dict[str, float], dict[str, int]]:
        """``({"auc_<task>": test AUC at the task's best valid epoch, ..., "mean_auc"}, {task: that epoch})``."""
        epochs = {t: int(max(self.trace, key=lambda r: r["valid"][f"auc_{t}"])["epoch"]) for t in self.tasks}
        by_epoch = {r["epoch"]: r for r in self.trace}
        per_task = {f"auc_{t}": float(by_epoch[e]["test"][f"auc_{t}"]) for t, e in epochs.items()}
        per_task["mean_auc"] = float(np.mean([per_task[f"auc_{t}"] for t in self.tasks]))
        return per_task, epochs

    @property
    def valid_score(self) -> float:
        """Mean over tasks of each task's best validation AUC."""
        return float(np.mean([self.best[t] for t in self.tasks]))


def infnet_beats_baselines(summary: dict, label: str = "check") -> dict[str, bool]:
    """The spec's check, per selection ("per_task", "joint"): INFNet's mean AUC above the better of Shared-Bottom and
    MMoE. ``summary[model][selection]["mean_auc"]`` is (mean, std) over seeds. Prints one PASS / FAIL line each and
    returns ``{"infnet_beats_baselines_<selection>": bool}`` (empty when a model is missing)."""
    checks: dict[str, bool] = {}
    if not {"INFNet", "SharedBottom", "MMoE"} <= set(summary):
        return checks
    for sel in ("per_task", "joint"):
        inf = summary["INFNet"][sel]["mean_auc"][0]
        base = max(summary["SharedBottom"][sel]["mean_auc"][0], summary["MMoE"][sel]["mean_auc"][0])
        checks[f"infnet_beats_baselines_{sel}"] = bool(inf > base)
        print(f"{label} ({sel}): INFNet mean AUC {inf:.4f} vs best of SharedBottom / MMoE {base:.4f}: "
              f"{'PASS' if inf > base else 'FAIL'}")
    return checks
