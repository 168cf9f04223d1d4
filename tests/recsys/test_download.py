"""Downloads against a throw-away HTTP server on 127.0.0.1 (loopback only)."""
import hashlib
import http.server
import io
import os
import socket
import stat
import threading
import zipfile

import numpy as np
import pytest

from recsys.data import download, safe_unzip
from graphattn.download import SUMS_FILE, read_sums


PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))


def test_download_records_and_checks_sha256(tmp_path, server):
    base, h = server
    h.files["/a.bin"] = PAYLOAD
    dest = download(base + "/a.bin", tmp_path / "a.bin", show_progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert read_sums(tmp_path) == {"a.bin": hashlib.sha256(PAYLOAD).hexdigest()}
    assert not (tmp_path / "a.bin.part").exists()
    n_requests = len(h.log)
    download(base + "/a.bin", dest, show_progress=False)  # cached: verified, no request
    assert len(h.log) == n_requests
    dest.write_bytes(PAYLOAD[:-1] + b"x")  # corrupted after the first download
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download(base + "/a.bin", dest, show_progress=False)


def test_download_resumes_a_truncated_part(tmp_path, server):
    base, h = server
    h.files["/b.bin"] = PAYLOAD
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:123_456])
    dest = download(base + "/b.bin", tmp_path / "b.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                    expected_size=len(PAYLOAD), show_progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert h.log == [("/b.bin", "bytes=123456-")]
    assert SUMS_FILE not in os.listdir(tmp_path)  # a published hash is not recorded


def test_download_checksum_and_size_mismatch_leave_nothing(tmp_path, server):
    base, h = server
    h.files["/c.bin"] = PAYLOAD
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download(base + "/c.bin", tmp_path / "c.bin", sha256="0" * 64, show_progress=False)
    with pytest.raises(ValueError, match=f"expected 10 bytes, got {len(PAYLOAD)}"):
        download(base + "/c.bin", tmp_path / "c.bin", expected_size=10, show_progress=False)
    assert os.listdir(tmp_path) == []


def test_network_failure_says_where_to_put_the_file(tmp_path, server):
    base, h = server
    with pytest.raises(OSError, match=r"put the file at .*d\.bin"):
        download(base + "/missing.bin", tmp_path / "d.bin", show_progress=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(OSError, match="could not download .*GRAPHATTN_DATA"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", show_progress=False, timeout=5)
    # a zip: the message offers its unzipped file too (what data/README.md says to put there)
    with pytest.raises(OSError, match=r"kg_final\.txt\.zip, or the unzipped kg_final\.txt beside it"):
        download(base + "/missing.zip", tmp_path / "kg_final.txt.zip", show_progress=False)


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, name)
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def test_safe_unzip(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(_zip([("kg_final.txt", "0 0 1\n"), ("sub/x.txt", "x")]))
    out = safe_unzip(good, tmp_path / "t")
    assert sorted(p.name for p in out) == ["kg_final.txt", "x.txt"]
    assert (tmp_path / "t" / "kg_final.txt").read_text() == "0 0 1\n"

    link = zipfile.ZipInfo("innocent")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    for name, members in [("evil", [("ok.txt", "fine"), ("../evil", "pwned")]),
                          ("abs", [("/tmp/abs-evil", "x")]),
                          ("link", [("/etc/passwd", link)])]:
        z = tmp_path / f"{name}.zip"
        z.write_bytes(_zip(members))
        target = tmp_path / f"out-{name}"
        with pytest.raises(ValueError, match="refusing to extract"):
            safe_unzip(z, target)
        assert not target.exists()  # checked before anything is written, the target folder included
    assert not (tmp_path / "evil").exists()


def test_kgat_dataset_fetched_on_first_use(tmp_path, server, monkeypatch, hand_dataset):
    from recsys.data import write_kgat_files
    from recsys.data import registry

    base, h = server
    src = write_kgat_files(hand_dataset, tmp_path / "src")
    for f in ("train.txt", "test.txt", "user_list.txt", "item_list.txt"):
        h.files[f"/last-fm/{f}"] = (src / f).read_bytes()
    h.files["/last-fm/kg_final.txt.zip"] = _zip([("kg_final.txt", (src / "kg_final.txt").read_text())])
    monkeypatch.setattr(registry, "KGAT_BASE", base + "/{name}/")
    ds = registry.LOADERS["last-fm"][0]({"data_path": str(tmp_path / "cache"), "valid_ratio": 0.0})
    assert ds.name == "last-fm" and ds.n_items == 4 and len(ds.kg) == 4
    assert ds.item_tokens.tolist() == ["i0", "i1", "i2", "i3"] and ds.relation_names is None
    cache = tmp_path / "cache" / "last-fm"
    assert set(read_sums(cache)) == {"kg_final.txt.zip", "train.txt", "test.txt", "user_list.txt",
                                     "item_list.txt"}
    n = len(h.log)
    registry.LOADERS["last-fm"][0]({"data_path": str(tmp_path / "cache")})  # offline from the cache
    assert len(h.log) == n


class _CutHandler(http.server.BaseHTTPRequestHandler):
    """Announces the whole body, sends half of it and closes the connection (a dropped download)."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_dropped_connection_keeps_only_the_part_and_is_a_missing_file_error(tmp_path, server):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/e.bin"
        with pytest.raises(FileNotFoundError, match=r"closed after 150000 of 300000 bytes.*partial data kept"):
            download(url, tmp_path / "e.bin", show_progress=False)  # no hash to catch it: the length must
    finally:
        srv.shutdown()
        srv.server_close()
    assert not (tmp_path / "e.bin").exists() and SUMS_FILE not in os.listdir(tmp_path)
    assert (tmp_path / "e.bin.part").read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]
    base, h = server  # the next call resumes the part from a server that stays up
    h.files["/e.bin"] = PAYLOAD
    assert download(base + "/e.bin", tmp_path / "e.bin", show_progress=False).read_bytes() == PAYLOAD
    assert h.log == [("/e.bin", "bytes=150000-")]


def test_safe_unzip_refuses_a_damaged_archive_before_writing(tmp_path):
    data = _zip([("kg_final.txt", "0 0 1\n" * 5000)])
    for name, broken in (("cut", data[: len(data) // 3]),
                         ("crc", data.replace(b"0 0 1\n0 0 1", b"0 0 1\n0 0 2", 1))):
        (tmp_path / f"{name}.zip").write_bytes(broken)
        with pytest.raises(ValueError, match=rf"{name}\.zip: not a valid zip archive .*download it again"):
            safe_unzip(tmp_path / f"{name}.zip", tmp_path / name)
        assert not (tmp_path / name).exists()


def test_failed_verification_names_the_destination_and_url(tmp_path, server):
    base, h = server
    h.files["/f.bin"] = PAYLOAD
    with pytest.raises(ValueError, match=rf"f\.bin: the file downloaded from {base}/f\.bin does not verify "
                                         r"\(sha256 mismatch, .*\); it was deleted"):
        download(base + "/f.bin", tmp_path / "f.bin", sha256="0" * 64, show_progress=False)
    assert os.listdir(tmp_path) == []


def test_failed_first_fetch_leaves_no_empty_dataset_folder(tmp_path, monkeypatch):
    from recsys.data import registry

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setattr(registry, "KGAT_BASE", f"http://127.0.0.1:{port}/" + "{name}/")
    with pytest.raises(FileNotFoundError, match=r"could not download .*kg_final\.txt\.zip"):
        registry.fetch_kgat("last-fm", {"data_path": str(tmp_path)}, show_progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "last-fm").mkdir()  # a folder the user made is left alone
    with pytest.raises(FileNotFoundError):
        registry.fetch_kgat("last-fm", {"data_path": str(tmp_path)}, show_progress=False)
    assert (tmp_path / "last-fm").is_dir()
