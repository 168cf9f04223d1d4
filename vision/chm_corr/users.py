"""Simulated users of CHM-Corr++ and simulated study sessions that write the same logs as the web page.

Users choose a 7 x 7 mask for a query (``None`` = no edit, the static prediction stands):
``oracle`` selects the bird (the foreground cells), ``noisy`` the foreground with 30 % of its cells flipped
off and as many background cells flipped on (the spec's "30 % flips", read as flips of the selection, not of all
49 cells, which would make the noisy selection mostly background), ``misled`` the background, ``none`` edits
nothing. Decision rules: after editing, an interactive
user accepts the AI's original (static) prediction iff the prediction is unchanged under the edit
("accept iff stable"); a static user, who cannot edit, accepts iff at least half of the K voters agree with the
prediction (the vote share is what the static explanation shows).
"""
from __future__ import annotations

import numpy as np

from .model import Prediction, QueryState
from .sessionlog import SessionLog

__all__ = ["USERS", "user_mask", "accept_stable", "accept_confident", "simulate_session"]

USERS = ("oracle", "noisy", "misled", "none")


def user_mask(user: str, foreground: np.ndarray, rng: np.random.Generator, flip: float = 0.3) -> np.ndarray | None:
    """The 49-cell mask the ``user`` selects for an image with ``foreground`` cells (``None`` for no edit)."""
    fg = np.asarray(foreground, dtype=bool).reshape(-1)
    if user == "oracle":
        return fg.copy()
    if user == "noisy":
        cells_in, cells_out = np.flatnonzero(fg), np.flatnonzero(~fg)
        n = min(int(round(flip * len(cells_in))), len(cells_out))
        mask = fg.copy()
        mask[rng.choice(cells_in, n, replace=False)] = False
        mask[rng.choice(cells_out, n, replace=False)] = True
        return mask
    if user == "misled":
        return ~fg
    if user == "none":
        return None
    raise ValueError(f"unknown user {user!r}; expected one of {USERS}")


def accept_stable(original: Prediction, edited: Prediction | None) -> bool:
    """Interactive decision rule: accept iff the edit leaves the prediction unchanged."""
    return edited is None or edited.label == original.label


def accept_confident(original: Prediction, share: float = 0.5) -> bool:
    """Static decision rule: accept iff at least ``share`` of the K voters chose the predicted label."""
    return float(np.mean(original.ranked_labels[: original.k] == original.label)) >= share


def simulate_session(log: SessionLog, states: list[QueryState], query_ids: list[int], foregrounds, labels,
                     user: str | None, rng: np.random.Generator) -> None:
    """Write one session: ``user=None`` is a static session (no clicks), otherwise the user clicks the cells of
    their mask one at a time (from the empty selection) and then decides by :func:`accept_stable`."""
    log.append("start", mode="static" if user is None else "interactive")
    for state, qid, fg, y in zip(states, query_ids, foregrounds, labels):
        original = state.static()
        if user is None:
            accept = accept_confident(original)
        else:
            mask = user_mask(user, fg, rng)
            edited = None
            if mask is not None:
                current = np.zeros(mask.size, dtype=bool)
                for cell in np.flatnonzero(mask):
                    current[cell] = True
                    edited = state.predict(current)
                    log.append("click", query=int(qid), cell=int(cell), selected=True,
                               mask=current.astype(int).tolist(), prediction=edited.label,
                               exemplars=[int(i) for i in edited.ranking[:5]])
            accept = accept_stable(original, edited)
        log.append("decision", query=int(qid), ai_label=original.label, true_label=int(y), accept=bool(accept))
