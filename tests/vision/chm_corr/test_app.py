import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vision.chm_corr.analysis import analyse_folder  # noqa: E402
from vision.chm_corr.app import create_app  # noqa: E402
from vision.chm_corr.sessionlog import read_log  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(tmp_path_factory.mktemp("logs"), seed=0, queries=3)


def test_api_rerank_matches_the_model_and_logs_every_click(app):
    client = TestClient(app)
    study = app.state.study
    assert "query-grid" in client.get("/").text
    assert client.get("/api/start", params={"session": "t1"}).json()["queries"] == 3
    q = client.get("/api/query/0").json()
    state = study.state(0)
    assert q["static"]["label"] == state.static().label
    assert len(q["colours"]) == 49 and len(q["importance"]) == 49
    fg = study.test.foreground[study.order[0]]
    r = client.post("/api/mask", json={"session": "t1", "query": 0, "mask": fg.astype(int).tolist(), "cell": None})
    want = state.predict(fg)
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == want.label
    assert [e["index"] for e in body["exemplars"]] == [int(i) for i in want.ranking[:5]]
    assert all(p["query_cell"] in np.flatnonzero(fg) for p in body["pairs"])
    d = client.post("/api/decision", json={"session": "t1", "query": 0, "accept": True}).json()
    assert d["ai_label"] == state.static().label
    events = read_log(app.state.log_dir / "t1.jsonl")
    assert [e["event"] for e in events] == ["start", "click", "decision"]
    assert events[1]["prediction"] == want.label and events[1]["mask"] == fg.astype(int).tolist()
    out = analyse_folder(app.state.log_dir, decisions=1)
    assert out["interactive"]["sessions"] == 1


def test_api_rejects_bad_input_clearly(app):
    client = TestClient(app)
    assert client.get("/api/query/99").status_code == 404
    r = client.post("/api/mask", json={"session": "t2", "query": 0, "mask": [1] * 48})
    assert r.status_code == 422 and "49 values" in r.text
    r = client.post("/api/mask", json={"session": "../x", "query": 0, "mask": [1] * 49})
    assert r.status_code == 422 and "session name" in r.text
    assert client.post("/api/mask", json={"session": "t2", "query": 0, "mask": [2] * 49}).status_code == 422
