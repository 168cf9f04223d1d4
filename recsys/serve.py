"""Recommendations over HTTP: a trained run folder behind a small FastAPI service (uvicorn).

    python run.py serve --run saved/KGAT-ml-100k-20261206-101500 [--host 127.0.0.1] [--port 8000] [--index HNSW32]
    python run.py serve --app chm-corr [--port 8000] [--log-dir DIR]        # the CHM-Corr++ page instead

API (JSON in and out; user and item ids are the dataset's raw ids, as :class:`recsys.export.Recommender` takes them):

- ``GET /recommend?user=196&k=20[&exclude_seen=true][&explain=false][&paths=3]`` ->
  ``{"user", "k", "items": [raw ids], "scores": [floats], "names": [..]}``, best first. ``names`` only where
  the dataset has item names (ml-100k's ``movie_title``); ``explanations`` (one list of knowledge-graph attention
  paths per item, :mod:`recsys.explain`) only with ``explain=true`` on a KGAT run. ``exclude_seen`` drops the
  user's training items; fewer than ``k`` items come back only when fewer are left.
- ``POST /recommend`` ``{"users": [...], "k": 20, "exclude_seen": true, "explain": false, "paths": 3}`` ->
  ``{"k", "results": [one GET answer per user, in order]}``; all users go through one index search.
- ``GET /health`` -> ``{"status": "ok"}``; ``GET /metadata`` -> model, dataset, run folder, index, counts, limits.

The answers are those of ``Recommender.recommend(users, k, exclude_train=exclude_seen)`` for the same users in
one call, exactly (scores are float64 and JSON keeps every bit); the float64 re-scoring may differ in the last bit
between batch sizes, so a user's scores from a batch and from a single request can differ by an ulp.
Thin client: ``curl 'http://127.0.0.1:8000/recommend?user=196&k=10'``.

Errors are JSON ``{"detail": "<one line>"}``: an unknown user is 404 naming the id; ``k`` or ``paths`` out of range,
a missing or mistyped parameter, a malformed body is 422; so is an explanation asked of a model without
knowledge-graph attention, or of more than 1000 (user, item) pairs at once. Nothing a request sends stops the server.

Loading (:class:`Service`) happens before the port opens: the checkpoint is read with ``weights_only=True``; a
folder that is not a run folder, lacks ``best.pt``, belongs to another task, or whose ``best.pt`` does not fit the
model its config names is a one-line ``error: ...`` and exit status 1.

The endpoints are ``async`` and run on the event loop one at a time: the work per request is a short faiss
search (and numpy), so a thread pool would only add a hand-off per request on a small machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

__all__ = ["Service", "ServeError", "create_app", "main", "MAX_K", "MAX_BATCH"]

MAX_K = 1000          # upper bound of k (also capped at the number of items)
MAX_BATCH = 10_000    # users in one POST /recommend
MAX_PATHS = 10        # explanation paths per item
MAX_EXPLAINED = 1000  # (user, item) pairs explained in one request (each is a path search)
NAME_COLUMNS = ("movie_title", "title", "item_name", "name")   # item_feat columns read as display names


class ServeError(ValueError):
    """A run folder that cannot be served (one line, shown as ``error: ...`` before the port opens)."""


class RequestError(Exception):
    """A bad request: HTTP ``status`` with a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


class Service:
    """A run folder's model, dataset, faiss index and (KGAT) path explainer, loaded once.

    Args:
        run_folder: what ``run.py`` wrote (``config.yaml`` and ``best.pt``).
        index: faiss factory string of the item index built at load (``Flat`` exact, ``HNSW32``, ``IVF64,Flat``).
        index_file: a saved index (:func:`recsys.export.export_index`) to load instead of building one.
        faiss_params: faiss parameter string for the built index, e.g. ``"nprobe=16"``.
    """

    def __init__(self, run_folder: str | os.PathLike, index: str = "Flat", index_file: str | os.PathLike | None = None,
                 faiss_params: str | None = None) -> None:
        from .export import Recommender

        self.run_folder = Path(run_folder)
        try:
            self.rec = Recommender.from_run(self.run_folder, index=index, index_path=index_file,
                                            faiss_params=faiss_params)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
            raise ServeError(_one_line(exc)) from None
        except RuntimeError as exc:   # load_state_dict: missing / unexpected keys, size mismatches
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServeError(f"{self.run_folder / 'best.pt'} does not fit the model its config.yaml names "
                             f"({self.rec_model_name()}): {first}") from None
        self.data, self.config, self.model = self.rec.data, self.rec.config, self.rec.model
        self.index = "file " + str(index_file) if index_file is not None else index
        self.max_k = min(self.data.n_items, MAX_K)
        self.names = _item_names(self.data)
        self.explainer = None
        if all(hasattr(self.model, a) for a in ("edge_index", "edge_type", "edge_attention")):
            from .explain import PathExplainer

            self.explainer = PathExplainer(self.model, self.data)
        # fill the raw-id lookup tables and the training matrix now, not on (concurrent) first requests
        self.data.user_index(self.data.user_raw([0]))
        self.data.item_index(self.data.item_raw([0]))
        self.data.csr("train")
        self.recommend(self.data.user_raw([0]).tolist(), k=1)

    def rec_model_name(self) -> str:
        try:
            from graphattn.config import load_yaml

            return str(load_yaml(self.run_folder / "config.yaml").get("model"))
        except Exception:   # only for the error message
            return "?"

    # ------------------------------------------------------------------ queries

    def check(self, k: Any, paths: Any = 3) -> None:
        """422 for ``k`` or ``paths`` out of range."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise RequestError(422, f"k must be an integer in [1, {self.max_k}], got {k!r}")
        if isinstance(paths, bool) or not isinstance(paths, int) or not 1 <= paths <= MAX_PATHS:
            raise RequestError(422, f"paths must be an integer in [1, {MAX_PATHS}], got {paths!r}")

    def user_indices(self, users: Sequence[str | int]) -> np.ndarray:
        """Internal indices of raw user ids; 404 naming the unknown ones."""
        try:
            return self.data.user_index(users)
        except KeyError:
            unknown = [u for u in users if not self._known(u)]
            shown = ", ".join(repr(str(u)) for u in unknown[:5]) + (f" and {len(unknown) - 5} more"
                                                                     if len(unknown) > 5 else "")
            what = "user id" if len(unknown) == 1 else "user ids"
            raise RequestError(404, f"unknown {what} {shown} in dataset '{self.data.name}' "
                                    f"({self.data.n_users} users; ids are the dataset's raw ids)") from None

    def _known(self, user: str | int) -> bool:
        try:
            self.data.user_index([user])
            return True
        except KeyError:
            return False

    def recommend(self, users: Sequence[str | int], k: int = 20, exclude_seen: bool = True, explain: bool = False,
                  paths: int = 3) -> list[dict[str, Any]]:
        """One answer per user (see the module docstring), all users through one index search."""
        self.check(k, paths)
        if explain and self.explainer is None:
            raise RequestError(422, f"explain=true needs a model with knowledge-graph attention (KGAT); this run "
                                    f"is {self.config['model']}")
        if explain and len(users) * k > MAX_EXPLAINED:
            raise RequestError(422, f"explain=true explains at most {MAX_EXPLAINED} (user, item) pairs per request, "
                                    f"got {len(users)} users x k={k}")
        idx = self.user_indices(users)
        items, scores = self.rec.recommend(idx, k, exclude_train=bool(exclude_seen), ids="internal")
        raw = self.data.item_raw(items)
        out = []
        for q, user in enumerate(users):
            n = int((items[q] >= 0).sum())     # slots beyond the items left after exclusion are dropped
            row: dict[str, Any] = {"user": str(user), "items": raw[q, :n].tolist(), "scores": scores[q, :n].tolist()}
            if self.names is not None:
                row["names"] = self.names[items[q, :n]].tolist()
            if explain:
                row["explanations"] = [[_path_json(p) for p in self.explainer.explain(int(idx[q]), int(i), top=paths)]
                                       for i in items[q, :n]]
            out.append(row)
        return out

    def metadata(self) -> dict[str, Any]:
        d, cfg = self.data, self.config
        meta = {"model": cfg["model"], "dataset": cfg["dataset"], "run_folder": str(self.run_folder.resolve()),
                "index": self.index, "backend": self.rec.retriever.backend,
                "n_users": d.n_users, "n_items": d.n_items, "n_entities": d.n_entities, "n_relations": d.n_relations,
                "n_train_interactions": int(len(d.train)), "embedding_size": int(self.rec.user_emb.shape[1]),
                "max_k": self.max_k, "max_batch": MAX_BATCH, "max_paths": MAX_PATHS, "max_explained": MAX_EXPLAINED,
                "item_names": self.names is not None, "explain": self.explainer is not None}
        metrics = self.run_folder / "metrics.json"
        if metrics.is_file():
            try:
                history = json.loads(metrics.read_text(encoding="utf-8"))
                meta["test_metrics"] = history.get("test", {})
                meta["epochs_trained"] = max((int(r["epoch"]) for r in history.get("train", [])), default=0)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                meta["test_metrics"] = None
        return meta


def _item_names(data) -> np.ndarray | None:
    """Display names per item index from the dataset's item features (e.g. ml-100k's ``movie_title``), else None."""
    feat = getattr(data, "item_feat", None)
    if feat is None or len(feat) != data.n_items:
        return None
    for col in NAME_COLUMNS:
        if col in feat.columns:
            values = feat[col].to_numpy(dtype=object)
            return np.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                             for v in values], dtype=object)
    return None


def _path_json(p) -> dict[str, Any]:
    return {"nodes": list(p.node_names), "kinds": list(p.node_kinds), "relations": list(p.relation_labels),
            "weights": list(p.weights), "score": p.score, "text": str(p)}


# ---------------------------------------------------------------------------------------------- the app

class RecommendIn(BaseModel):
    """Body of ``POST /recommend``: raw user ids (strings, or ints for numeric ids) and the GET options."""

    model_config = ConfigDict(extra="forbid")
    users: list[Union[StrictStr, StrictInt]]
    k: StrictInt = 20
    exclude_seen: StrictBool = True
    explain: StrictBool = False
    paths: StrictInt = 3


def create_app(run_folder: str | os.PathLike | None = None, index: str = "Flat", service: Service | None = None,
               index_file: str | os.PathLike | None = None, faiss_params: str | None = None):
    """The FastAPI app over ``service`` (or a :class:`Service` loaded from ``run_folder`` now)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    if service is None:
        if run_folder is None:
            raise ValueError("create_app needs run_folder or service")
        service = Service(run_folder, index=index, index_file=index_file, faiss_params=faiss_params)

    app = FastAPI(title=f"graphattn recommendations: {service.config['model']} on {service.config['dataset']}")
    app.state.service = service

    def answer(status: int, payload: Any) -> JSONResponse:
        return JSONResponse(payload, status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return answer(exc.status, {"detail": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(422, {"detail": _validation_message(exc.errors())})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:   # logged by uvicorn; serving goes on
        return answer(500, {"detail": f"internal error: {type(exc).__name__}: {_one_line(exc)}"})

    @app.get("/health")
    async def health() -> JSONResponse:
        return answer(200, {"status": "ok"})

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        return answer(200, service.metadata())

    @app.get("/recommend")
    async def recommend_one(user: str, k: int = 20, exclude_seen: bool = True, explain: bool = False,
                            paths: int = 3) -> JSONResponse:
        row = service.recommend([user], k, exclude_seen, explain, paths)[0]
        return answer(200, {"k": k, **row})

    @app.post("/recommend")
    async def recommend_many(body: RecommendIn) -> JSONResponse:
        if not 1 <= len(body.users) <= MAX_BATCH:
            raise RequestError(422, f"users must hold 1 to {MAX_BATCH} user ids, got {len(body.users)}")
        rows = service.recommend(body.users, body.k, body.exclude_seen, body.explain, body.paths)
        return answer(200, {"k": body.k, "results": rows})

    return app


def _validation_message(errors: Sequence[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: ``query parameter k: Input should be a valid integer (got 'x')``.

    The alternatives of a union (``users.0.str``, ``users.0.int``) are joined into one entry."""
    merged: dict[str, list[str]] = {}
    for err in errors:
        loc = [str(x) for x in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            where = "body"
            msg = f"not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))} at character {loc[-1]})"
        else:
            if loc and loc[-1] in ("str", "int", "bool", "float"):   # union branch tags
                loc = loc[:-1]
            if loc and loc[0] == "query":
                where = f"query parameter {'.'.join(loc[1:])}"
            elif loc and loc[0] == "body":
                where = "body" + (f" field {'.'.join(loc[1:])}" if len(loc) > 1 else "")
            else:
                where = ".".join(loc) or "request"
            msg = str(err.get("msg", "invalid"))
            if "input" in err and err.get("type") != "missing":
                shown = repr(err["input"])
                msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        if msg not in merged.setdefault(where, []):
            merged[where].append(msg)
    parts = [f"{where}: {' or '.join(msgs)}" for where, msgs in list(merged.items())[:3]]
    more = f"; and {len(merged) - 3} more" if len(merged) > 3 else ""
    return "; ".join(parts) + more


# ---------------------------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py serve", description="Serve a trained recommender's top-K over HTTP (or, with --app chm-corr, "
                                         "the CHM-Corr++ page).", allow_abbrev=False)
    parser.add_argument("--app", choices=["recommend", "chm-corr"], default="recommend",
                        help="what to serve (default: recommend)")
    parser.add_argument("--run", metavar="FOLDER", help="run folder (saved/<model>-<dataset>-<time>) to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--index", default="Flat", help="faiss factory string of the item index: Flat (exact), "
                                                        "HNSW32, IVF64,Flat, ... (default Flat)")
    parser.add_argument("--index-file", metavar="PATH", help="a saved faiss index (recsys.export.export_index) "
                                                             "to serve instead of building --index")
    parser.add_argument("--faiss-params", metavar="STR", help="faiss parameters of the built index, e.g. nprobe=16")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (default 1: requests are "
                                                               "single queries)")
    chm = parser.add_argument_group("--app chm-corr")
    chm.add_argument("--log-dir", default="results/chm_corr/web_sessions", help="folder of the session logs")
    chm.add_argument("--seed", type=int, default=0, help="seed of the synthetic birds")
    chm.add_argument("--queries", type=int, default=20, help="images per session")
    return parser


def _error(message: object) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``run.py serve ...``: load, then serve until interrupted; 1 (one line on stderr) when loading fails."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:   # --help, or a usage error (exit 2)
        return int(exc.code or 0)
    if not 0 <= args.port <= 65535:
        return _error(f"--port must be in [0, 65535], got {args.port}")
    if args.threads < 1:
        return _error(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    import uvicorn

    if args.app == "chm-corr":
        from vision.chm_corr.app import create_app as chm_corr_app

        try:
            app = chm_corr_app(args.log_dir, args.seed, args.queries)
        except ValueError as exc:
            return _error(exc)
        what = f"CHM-Corr++ page (session logs in {args.log_dir}); open http://{args.host}:{args.port}/?session=NAME"
    else:
        if args.run is None:
            return _error("run.py serve needs --run saved/<run folder> (or --app chm-corr)")
        try:
            service = Service(args.run, index=args.index, index_file=args.index_file, faiss_params=args.faiss_params)
        except ServeError as exc:
            return _error(exc)
        app = create_app(service=service)
        what = (f"{service.config['model']} on {service.config['dataset']} ({service.data.n_users} users, "
                f"{service.data.n_items} items, index {service.index}) from {args.run}; "
                f"try http://{args.host}:{args.port}/recommend?user={service.data.user_raw([0])[0]}&k=10")
    print(f"serving {what}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except SystemExit as exc:   # uvicorn exits 1 when it cannot bind the port (it has logged why)
        return int(exc.code or 0)
    return 0
