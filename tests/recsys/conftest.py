import http.server
import threading

import numpy as np
import pytest

from recsys.data import RecDataset, planted_kg


@pytest.fixture(scope="session")
def ml100k():
    """RecBole's bundled ml-100k, loaded once per session."""
    from recsys.data.registry import load_ml100k

    return load_ml100k({})


@pytest.fixture
def small_planted():
    return planted_kg(n_users=40, n_items=60, n_clusters=4, n_noise_entities=10, seed=3)


@pytest.fixture
def hand_dataset():
    """Three users, four items, a five-entity KG; user 2 has only test items."""
    return RecDataset(
        name="hand", n_users=3, n_items=4, n_entities=6, n_relations=2,
        train=np.array([[0, 0], [0, 1], [1, 2]]), valid=np.array([[1, 3]]), test=np.array([[0, 2], [2, 3]]),
        kg=np.array([[0, 0, 4], [1, 0, 4], [2, 1, 5], [4, 1, 5]]),
        user_tokens=np.array(["ua", "ub", "uc"]), item_tokens=np.array(["i0", "i1", "i2", "i3"]),
        entity_tokens=np.array(["e0", "e1", "e2", "e3", "g", "h"]), relation_names=["genre", "by"],
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A throw-away HTTP server on 127.0.0.1 serving ``handler.files`` (path -> bytes), with Range requests;
    yields ``(base url, handler)``; ``handler.log`` lists ``(path, Range header)`` per request."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.files, _Handler.log = {}, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    srv.shutdown()
    srv.server_close()
