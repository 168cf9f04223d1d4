"""The recommendation server (recsys/serve.py): ``run.py serve`` in a subprocess on a free port over a tiny KGAT
trained here; every answer equals the in-process Recommender / PathExplainer exactly, every bad request gets its
status and a one-line message, and the server outlives them all. Loading errors end ``run.py serve`` with one line
and status 1 before any port opens."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import recsys  # noqa: E402,F401  (registers the recsys task, models and datasets)
import run as run_module  # noqa: E402
from graphattn.config import Config  # noqa: E402
from graphattn.registry import get_model  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402
from recsys.explain import PathExplainer  # noqa: E402
from recsys.export import Recommender, export_index, load_run  # noqa: E402
from recsys.serve import Service, _item_names  # noqa: E402
from recsys.task import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = {"planted_kg": {"n_users": 30, "n_items": 40, "n_clusters": 4, "n_noise_entities": 8, "seed": 5},
        "embedding_size": 8, "show_progress": False, "log_level": "WARNING", "num_threads": 1, "seed": 3,
        "learning_rate": 0.01, "epochs": 2}
KGAT = {"kg_embedding_size": 4, "layers": [8, 4], "mess_dropout": [0.1, 0.1]}


def _train(tmp_path, model="KGAT", extra=KGAT):
    config = Config(model, "planted-kg", config_dict={**TINY, **extra, "checkpoint_dir": str(tmp_path)})
    with RunDir.create(config) as run:
        Trainer.from_config(config, run).fit()
    return run.path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A KGAT trained for two epochs on a 30-user planted-kg (a real run folder: config.yaml, best.pt, ...)."""
    return _train(tmp_path_factory.mktemp("saved"))


@pytest.fixture(scope="module", autouse=True)
def server(trained, tmp_path_factory):
    """``python run.py serve --run <folder> --port <free>`` as a subprocess, started when the module starts (the
    in-process tests below run while it loads); yields (base url, process). ``client`` waits for it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "server.log"    # a file, not a pipe nobody drains
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "run.py", "serve", "--run", str(trained), "--port", str(port)],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    proc.log = log
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server):
    url, proc = server
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"run.py serve exited with {proc.returncode}: {proc.log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("run.py serve did not answer /health within 90 s")
        time.sleep(0.1)
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def reference(trained):
    rec = Recommender.from_run(trained)
    return rec, PathExplainer(rec.model, rec.data)


# ---------------------------------------------------------------------------------------------- in process
# (first: they run while the server subprocess loads)


def test_explain_on_a_model_without_kg_attention_is_422(tmp_path):
    from fastapi.testclient import TestClient

    from recsys.serve import create_app

    config = Config("BPRMF", "planted-kg", config_dict={**TINY, "checkpoint_dir": str(tmp_path)})
    data = load_data(config)
    with RunDir.create(config) as run:
        run.save_checkpoint({"model": get_model("BPRMF")(config, data).state_dict(), "epoch": 0}, "best.pt")
    client = TestClient(create_app(run.path))
    assert client.get("/metadata").json()["explain"] is False
    assert client.get("/recommend", params={"user": "0", "k": 3}).status_code == 200
    r = client.get("/recommend", params={"user": "0", "k": 3, "explain": "true"})
    assert r.status_code == 422 and "needs a model with knowledge-graph attention (KGAT); this run is BPRMF" in r.text


def test_item_names_come_from_the_item_features(hand_dataset):
    assert _item_names(hand_dataset) is None
    hand_dataset.item_feat = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"],
                                           "movie_title": ["A", None, "C", "D"]})
    assert _item_names(hand_dataset).tolist() == ["A", None, "C", "D"]


def _serve_error(argv, capsys):
    assert run_module.main(["serve", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_unservable_run_folders_are_one_line_errors(trained, tmp_path, capsys):
    assert "run folder 'nowhere' not found" in _serve_error(["--run", "nowhere"], capsys)
    (tmp_path / "empty").mkdir()
    assert "is not a run folder: it has no config.yaml" in _serve_error(["--run", str(tmp_path / "empty")], capsys)

    no_best = tmp_path / "no-best"
    no_best.mkdir()
    (no_best / "config.yaml").write_text((Path(trained) / "config.yaml").read_text())
    (no_best / "last.pt").write_bytes((Path(trained) / "last.pt").read_bytes())
    assert "has no best.pt (checkpoints there: ['last.pt'])" in _serve_error(["--run", str(no_best)], capsys)

    other_task = tmp_path / "sasrec"
    other_task.mkdir()
    Config("SASRec", "ml-100k-seq").save(other_task / "config.yaml")
    torch.save({"model": {}}, other_task / "best.pt")
    assert "model 'SASRec' belongs to task 'sequential', not recsys" in _serve_error(["--run", str(other_task)], capsys)

    # a KGAT config with a BPRMF checkpoint: refused at start, not on the first request
    wrong = tmp_path / "wrong-weights"
    wrong.mkdir()
    (wrong / "config.yaml").write_text((Path(trained) / "config.yaml").read_text())
    model, data, _ = load_run(trained)
    bprmf = get_model("BPRMF")(Config("BPRMF", "planted-kg", config_dict=TINY), data)
    torch.save({"model": bprmf.state_dict(), "epoch": 1}, wrong / "best.pt")
    assert "best.pt does not fit the model its config.yaml names (KGAT)" in _serve_error(["--run", str(wrong)], capsys)

    assert "needs --run" in _serve_error([], capsys)
    assert "--port must be in [0, 65535]" in _serve_error(["--run", str(trained), "--port", "70000"], capsys)


def test_a_foreign_pickle_is_refused_without_running_it(trained, tmp_path, capsys):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.yaml").write_text((Path(trained) / "config.yaml").read_text())
    torch.save({"model": Path("x")}, evil / "best.pt")          # a class reference: weights_only refuses it
    assert "holds Python objects other than tensors" in _serve_error(["--run", str(evil)], capsys)


def test_a_bad_index_string_is_a_one_line_error(trained, capsys):
    assert _serve_error(["--run", str(trained), "--index", "Nonsense99"], capsys)


def test_service_hnsw_index_and_saved_index_serve(trained, tmp_path):
    service = Service(trained, index="HNSW32")
    assert service.metadata()["index"] == "HNSW32"
    row = service.recommend(["0"], k=5)[0]
    assert len(row["items"]) == 5 and row["scores"] == sorted(row["scores"], reverse=True)
    flat = Service(trained)
    model, data, _ = load_run(trained)
    saved = Service(trained, index_file=export_index(model, data, tmp_path / "items.faiss"))
    assert saved.metadata()["index"] == f"file {tmp_path / 'items.faiss'}"
    assert saved.recommend(["0", "7"], k=6) == flat.recommend(["0", "7"], k=6)


def test_serve_app_chm_corr_starts_the_chm_corr_page(tmp_path, monkeypatch):
    """``run.py serve --app chm-corr`` hands vision.chm_corr.app's page to uvicorn (both stubbed here: the page
    itself is tested in tests/vision/chm_corr)."""
    import uvicorn

    import vision.chm_corr.app

    served, built = {}, []
    monkeypatch.setattr(vision.chm_corr.app, "create_app", lambda *a: built.append(a) or "the page")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert run_module.main(["serve", "--app", "chm-corr", "--queries", "2", "--log-dir", str(tmp_path),
                            "--port", "8123"]) == 0
    assert built == [(str(tmp_path), 0, 2)]
    assert served == {"app": "the page", "host": "127.0.0.1", "port": 8123, "log_level": "warning"}


# ---------------------------------------------------------------------------------------------- over HTTP

def test_health_and_metadata(client, trained, reference):
    rec, _ = reference
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["model"] == "KGAT" and meta["dataset"] == "planted-kg" and meta["index"] == "Flat"
    assert Path(meta["run_folder"]) == Path(trained).resolve()
    assert (meta["n_users"], meta["n_items"]) == (rec.data.n_users, rec.data.n_items) == (30, 40)
    assert meta["n_train_interactions"] == len(rec.data.train) and meta["max_k"] == 40
    assert meta["explain"] is True and meta["item_names"] is False
    assert meta["test_metrics"] == json.loads((Path(trained) / "metrics.json").read_text())["test"]


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_get_equals_recommend_exactly(client, reference, exclude_seen):
    rec, _ = reference
    for user in rec.data.user_raw(np.arange(rec.data.n_users)).tolist():
        # the same query as the request: float64 re-scoring may differ in the last bit between batch sizes
        want_items, want_scores = rec.recommend([user], k=7, exclude_train=exclude_seen)
        r = client.get("/recommend", params={"user": user, "k": 7, "exclude_seen": str(exclude_seen).lower()})
        assert r.status_code == 200
        body = r.json()
        assert body["user"] == user and body["k"] == 7 and "names" not in body and "explanations" not in body
        assert body["items"] == want_items[0].tolist()
        assert body["scores"] == want_scores[0].tolist()           # exactly: floats survive JSON unchanged


def test_all_items_leaves_out_the_seen_ones(client, reference):
    rec, _ = reference
    user = rec.data.user_raw([4])[0]
    body = client.get("/recommend", params={"user": user, "k": 40}).json()
    seen = rec.data.csr("train")[4].nnz
    items, scores = rec.recommend([user], k=40)
    assert len(body["items"]) == 40 - seen > 0 and items[0, 40 - seen:].tolist() == [""] * seen
    assert body["items"] == items[0, :40 - seen].tolist() and body["scores"] == scores[0, :40 - seen].tolist()
    assert len(client.get("/recommend", params={"user": user, "k": 40, "exclude_seen": "false"}).json()["items"]) == 40


def test_post_batches_the_same_answers(client, reference):
    rec, _ = reference
    users = rec.data.user_raw(np.arange(rec.data.n_users)).tolist()
    r = client.post("/recommend", json={"users": users, "k": 5})
    assert r.status_code == 200
    results = r.json()["results"]
    items, scores = rec.recommend(users, k=5)
    assert [row["user"] for row in results] == users
    assert [row["items"] for row in results] == items.tolist()
    assert [row["scores"] for row in results] == scores.tolist()
    # numeric ids may be sent as JSON numbers; repeated users are answered each time
    again = client.post("/recommend", json={"users": [int(users[3]), users[3]], "k": 5}).json()["results"]
    assert again[0] == again[1]
    assert again[0]["items"] == results[3]["items"]
    np.testing.assert_allclose(again[0]["scores"], results[3]["scores"], rtol=1e-12)


def test_explain_returns_the_explainer_paths(client, reference):
    rec, explainer = reference
    user = rec.data.user_raw([2])[0]
    body = client.get("/recommend", params={"user": user, "k": 3, "explain": "true", "paths": 2}).json()
    items = rec.data.item_index(body["items"])
    assert len(body["explanations"]) == 3
    assert any(body["explanations"])                               # the trained CKG links this user to some items
    for item, paths in zip(items, body["explanations"]):
        want = explainer.explain(2, int(item), top=2)
        assert [p["text"] for p in paths] == [str(p) for p in want]
        assert [p["score"] for p in paths] == [p.score for p in want]
        assert all(p["nodes"][0] == f"user {user}" and p["kinds"][-1] == "item" for p in paths)
    post = client.post("/recommend", json={"users": [user], "k": 3, "explain": True, "paths": 2}).json()
    assert post["results"][0]["explanations"] == body["explanations"]


@pytest.mark.parametrize("params, status, message", [
    ({"user": "nobody"}, 404, "unknown user id 'nobody'"),
    ({"user": "0", "k": 0}, 422, "k must be an integer in [1, 40], got 0"),
    ({"user": "0", "k": 41}, 422, "k must be an integer in [1, 40], got 41"),
    ({"user": "0", "k": "ten"}, 422, "query parameter k: Input should be a valid integer"),
    ({"user": "0", "exclude_seen": "maybe"}, 422, "query parameter exclude_seen"),
    ({"user": "0", "explain": "true", "paths": 0}, 422, "paths must be an integer in [1, 10], got 0"),
    ({"k": 5}, 422, "query parameter user: Field required"),
])
def test_bad_get_requests(client, params, status, message):
    r = client.get("/recommend", params=params)
    assert r.status_code == status and message in r.json()["detail"], r.text


@pytest.mark.parametrize("body, status, message", [
    (b'{"users": ["0"', 422, "body: not valid JSON"),
    (b"[1, 2]", 422, "body: Input should be a valid dictionary"),
    (b'{"k": 5}', 422, "body field users: Field required"),
    (b'{"users": []}', 422, "users must hold 1 to 10000 user ids, got 0"),
    (b'{"users": "0"}', 422, "body field users: Input should be a valid list"),
    (b'{"users": [0.5]}', 422, "body field users.0: Input should be a valid string"),
    (b'{"users": ["0"], "k": "5"}', 422, "body field k: Input should be a valid integer"),
    (b'{"users": ["0"], "k": 1000}', 422, "k must be an integer in [1, 40], got 1000"),
    (b'{"users": ["0"], "top": 5}', 422, "body field top: Extra inputs are not permitted"),
    (b'{"users": ["0", "x1", "x2"]}', 404, "unknown user ids 'x1', 'x2'"),
    (json.dumps({"users": [str(u) for u in range(30)], "k": 40, "explain": True}).encode(), 422,
     "explain=true explains at most 1000 (user, item) pairs per request, got 30 users x k=40"),
])
def test_bad_post_requests(client, body, status, message):
    r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_server_outlives_bad_requests(server, client):
    url, proc = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:   # not HTTP at all
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        s.recv(1024)
    assert client.get("/nowhere").status_code == 404
    assert client.get("/health").json() == {"status": "ok"} and proc.poll() is None
