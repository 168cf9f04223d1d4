"""The CHM-Corr++ web page: a person edits which query patches the model uses and sees it re-rank at once.

``create_app(log_dir)`` returns a FastAPI app serving one plain HTML/JS page (``static/index.html``) and a JSON
API; ``python -m vision.chm_corr.serve`` runs it with uvicorn. A session shows ``queries`` test images of the
synthetic birds (the same ones, in the same order, for every session of a seed). For each image the page shows
the 7 x 7 grid, the model's importance map and its static prediction; every click on a cell posts the new mask,
is appended to ``<log_dir>/<session>.jsonl`` (:mod:`.sessionlog`) and answers with the re-ranked exemplars, the
new prediction and the explanation pairs; accept / reject is logged as the session's decision on the static
prediction, which is what :mod:`.analysis` reads.

API: ``GET /api/start?session=S`` | ``GET /api/query/{i}`` | ``POST /api/mask`` ``{session, query, mask, cell}`` |
``POST /api/decision`` ``{session, query, accept}``.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from .data import GRID, make_birds
from .model import CHMCorr, Prediction, QueryState
from .sessionlog import SessionLog

__all__ = ["create_app", "Study"]

PAGE = Path(__file__).resolve().parent / "static" / "index.html"
CELLS = GRID * GRID


class MaskIn(BaseModel):
    session: str
    query: int
    mask: list[int]
    cell: int | None = None


class DecisionIn(BaseModel):
    session: str
    query: int
    accept: bool


class Study:
    """The model, the test images a session walks through, and the per-query cache the page edits."""

    def __init__(self, seed: int = 0, queries: int = 20):
        torch.set_num_threads(1)
        self.train, self.test = make_birds(seed)
        self.model = CHMCorr(self.train.features, self.train.labels)
        order = np.random.default_rng(seed).permutation(len(self.test))
        if not 1 <= queries <= len(order):
            raise ValueError(f"queries must be in [1, {len(order)}], got {queries}")
        self.order = order[:queries]
        # colours: the first three principal directions of the training patches, per patch
        sample = self.train.features.reshape(-1, self.train.features.shape[-1])
        sample = sample / np.linalg.norm(sample, axis=1, keepdims=True)
        self._mean = sample.mean(0)
        self._basis = np.linalg.svd(sample[::7] - self._mean, full_matrices=False)[2][:3]
        proj = (sample - self._mean) @ self._basis.T
        self._lo, self._hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
        self.state = lru_cache(maxsize=64)(self._state)

    def _state(self, i: int) -> QueryState:
        return self.model.query(self.test.features[self.order[i]])

    def colours(self, feats: np.ndarray) -> list[str]:
        x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        rgb = np.clip(((x - self._mean) @ self._basis.T - self._lo) / (self._hi - self._lo), 0, 1)
        return ["#%02x%02x%02x" % tuple(int(40 + 200 * v) for v in c) for c in rgb]

    def prediction(self, pred: Prediction, top: int = 5) -> dict:
        d = pred.as_dict(top)
        for e in d["exemplars"]:
            e["colours"] = self.colours(self.train.features[e["index"]])
        return d

    def check_query(self, i: int) -> None:
        if not 0 <= i < len(self.order):
            raise HTTPException(404, f"query {i} is out of range [0, {len(self.order)})")


def create_app(log_dir: str | os.PathLike = "results/chm_corr/web_sessions", seed: int = 0,
               queries: int = 20) -> FastAPI:
    """The app: page at ``/``, JSON API under ``/api``, click logs in ``log_dir``."""
    study = Study(seed, queries)
    app = FastAPI(title="CHM-Corr++ (synthetic birds)")
    app.state.study, app.state.log_dir = study, Path(log_dir)

    def log(session: str) -> SessionLog:
        try:
            return SessionLog(app.state.log_dir, session)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/start")
    def start(session: str) -> dict:
        log(session).append("start", mode="interactive")
        return {"session": session, "queries": len(study.order), "classes": int(study.train.labels.max()) + 1}

    @app.get("/api/query/{i}")
    def query(i: int) -> dict:
        study.check_query(i)
        state = study.state(i)
        default = state.default_mask()
        return {"query": i, "colours": study.colours(study.test.features[study.order[i]]),
                "importance": [round(float(v), 4) for v in state.importance_map()],
                "default_mask": default.astype(int).tolist(), "static": study.prediction(state.static()),
                "current": study.prediction(state.predict(default))}

    @app.post("/api/mask")
    def mask(body: MaskIn) -> dict:
        study.check_query(body.query)
        if len(body.mask) != CELLS or any(v not in (0, 1) for v in body.mask):
            raise HTTPException(422, f"mask must be {CELLS} values of 0 or 1, got {len(body.mask)} values")
        if body.cell is not None and not 0 <= body.cell < CELLS:
            raise HTTPException(422, f"cell must be in [0, {CELLS}), got {body.cell}")
        pred = study.state(body.query).predict(np.array(body.mask, dtype=bool))
        log(body.session).append("click", query=body.query, cell=body.cell,
                                 selected=None if body.cell is None else bool(body.mask[body.cell]),
                                 mask=body.mask, prediction=pred.label,
                                 exemplars=[int(x) for x in pred.ranking[:5]])
        return study.prediction(pred)

    @app.post("/api/decision")
    def decision(body: DecisionIn) -> dict:
        study.check_query(body.query)
        ai = study.state(body.query).static().label
        truth = int(study.test.labels[study.order[body.query]])
        log(body.session).append("decision", query=body.query, ai_label=ai, true_label=truth, accept=body.accept)
        return {"query": body.query, "ai_label": ai, "true_label": truth, "correct": body.accept == (ai == truth)}

    return app
