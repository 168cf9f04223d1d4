"""The study analysis: per-session accuracy of accept / reject decisions and a t-test, static vs interactive.

As the released analysis (spec, "Study protocol"): a session counts as CHM-Corr++ when its log has any click,
otherwise static CHM-Corr; only sessions with exactly ``decisions`` (20) decisions are kept; a session's accuracy
is (correct accepts + correct rejects) / 20, where accepting is correct iff the AI's label is the true label;
the groups are compared by Student's two-sample t-test (``scipy.stats.ttest_ind``, equal variances).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from .sessionlog import read_log

__all__ = ["SessionSummary", "summarise_session", "analyse", "analyse_folder"]


@dataclass
class SessionSummary:
    session: str
    interactive: bool
    decisions: int
    correct: int
    ai_right: int
    accepted_when_right: int
    ai_wrong: int
    rejected_when_wrong: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.decisions if self.decisions else float("nan")


def summarise_session(name: str, events: list[dict]) -> SessionSummary:
    """Count one session's decisions (every decision event counts, as in the released analysis)."""
    decisions = [e for e in events if e["event"] == "decision"]
    right = [bool(d["accept"]) for d in decisions if d["ai_label"] == d["true_label"]]
    wrong = [bool(d["accept"]) for d in decisions if d["ai_label"] != d["true_label"]]
    return SessionSummary(name, any(e["event"] == "click" for e in events), len(decisions),
                          sum(right) + sum(not a for a in wrong), len(right), sum(right), len(wrong),
                          sum(not a for a in wrong))


def analyse(sessions: list[SessionSummary], decisions: int = 20) -> dict:
    """Group statistics and the t-test over the sessions with exactly ``decisions`` decisions."""
    kept = [s for s in sessions if s.decisions == decisions]
    out = {"sessions_read": len(sessions), "sessions_dropped": len(sessions) - len(kept)}
    groups = {}
    for name, flag in (("static", False), ("interactive", True)):
        g = [s for s in kept if s.interactive == flag]
        acc = np.array([s.accuracy for s in g], dtype=np.float64)
        right, wrong = sum(s.ai_right for s in g), sum(s.ai_wrong for s in g)
        groups[name] = acc
        out[name] = {
            "sessions": len(g), "decisions": sum(s.decisions for s in g),
            "mean_accuracy": float(acc.mean()) if len(g) else None,
            "sd_accuracy": float(acc.std(ddof=1)) if len(g) > 1 else None,
            "accept_rate_ai_right": sum(s.accepted_when_right for s in g) / right if right else None,
            "reject_rate_ai_wrong": sum(s.rejected_when_wrong for s in g) / wrong if wrong else None,
        }
    if len(groups["static"]) > 1 and len(groups["interactive"]) > 1:
        t, p = stats.ttest_ind(groups["static"], groups["interactive"], equal_var=True)
        out["t"], out["p"] = float(t), float(p)
    else:
        out["t"] = out["p"] = None
    return out


def analyse_folder(folder: str | os.PathLike, decisions: int = 20) -> dict:
    """:func:`analyse` over every ``*.jsonl`` session file in ``folder``."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl session logs in {folder}")
    return analyse([summarise_session(f.stem, read_log(f)) for f in files], decisions)
