"""graphattn/download.py: SHA256SUMS parsing, download defaults, the offline message and zip member names that
the eighth mutation run (#22) found untested. No network: urlopen is replaced where a request would be made."""
import io
import urllib.error
import zipfile

import pytest

from graphattn import download as dl


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


H = "ab" * 32


def test_read_sums_line_numbers_rules_and_binary_marker(tmp_path):
    (tmp_path / dl.SUMS_FILE).write_text(f"{H}  a.bin\n{H} *b.bin\n")
    assert dl.read_sums(tmp_path) == {"a.bin": H, "b.bin": H}
    for bad in (f"{H[:-1]}  c.bin", f"{H}  c.bin extra"):
        (tmp_path / dl.SUMS_FILE).write_text(f"{H}  a.bin\n{bad}\n")
        with pytest.raises(ValueError, match=r"SHA256SUMS line 2: expected '<sha256 hex> <file name>'"):
            dl.read_sums(tmp_path)


def test_download_defaults_and_nested_destination(tmp_path, monkeypatch):
    seen = {}

    def offline(req, timeout):
        seen["timeout"] = timeout
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    dest = tmp_path / "a" / "b" / "f.bin"                   # neither a/ nor a/b/ exists
    with pytest.raises(dl.DownloadError, match="could not download http://x/f.bin: <urlopen error no network>"):
        dl.download("http://x/f.bin", dest)
    assert seen["timeout"] == 60.0 and dest.parent.is_dir()


def test_download_shows_progress_by_default(tmp_path, monkeypatch):
    import tqdm.auto

    class Resp:
        status, headers = 200, {"Content-Length": "3"}

        def __init__(self):
            self.body = io.BytesIO(b"abc")

        def read(self, n):
            return self.body.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    bars = []
    real = tqdm.auto.tqdm

    def spy(*a, **k):
        bars.append(k["disable"])
        return real(*a, **k)
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda req, timeout: Resp())
    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    dl.download("http://x/g.bin", tmp_path / "g.bin")
    dl.download("http://x/h.bin", tmp_path / "h.bin", show_progress=False)
    assert bars == [False, True]


def test_offline_message_in_full(tmp_path):
    msg = str(dl._offline_error("http://x/f.bin", tmp_path / "f.bin", "boom"))
    assert msg == (f"could not download http://x/f.bin: boom. To work offline, put the file at {tmp_path / 'f.bin'} "
                   "(or set GRAPHATTN_DATA to a folder holding <dataset>/f.bin); see data/README.md")
    msg = str(dl._offline_error("u", tmp_path / "k.zip", "boom", partial=tmp_path / "k.zip.part"))
    assert msg.startswith(f"could not download u: boom (partial data kept in {tmp_path / 'k.zip.part'}; the next "
                          f"call resumes it). To work offline, put the file at {tmp_path / 'k.zip'}, or the unzipped "
                          "k beside it (or set")


def test_unzip_names_the_member_failing_its_crc(tmp_path):
    data = _zip([("a.txt", b"hello world " * 10)])
    broken = data.replace(b"hello world", b"hello_world", 1)
    (tmp_path / "b.zip").write_bytes(broken)
    with pytest.raises(ValueError, match=r"not a valid zip archive \(member 'a\.txt' fails its CRC check\)"):
        dl.safe_unzip(tmp_path / "b.zip", tmp_path / "out")


@pytest.mark.parametrize("name", ["/abs.txt", "\\abs.txt", "C:x.txt", "C:"])
def test_unzip_refuses_absolute_and_drive_names(tmp_path, name):
    (tmp_path / "z.zip").write_bytes(_zip([(name, b"x")]))
    with pytest.raises(ValueError, match=rf"member {name!r} has an absolute path; refusing to extract".replace(
            "\\", "\\\\")):
        dl.safe_unzip(tmp_path / "z.zip", tmp_path / "out")


def test_unzip_one_letter_names_and_missing_parents(tmp_path):
    (tmp_path / "z.zip").write_bytes(_zip([("a", b"1"), ("d1/d2/f.txt", b"2")]))
    target = tmp_path / "t1" / "t2"                           # the target's parent does not exist either
    out = dl.safe_unzip(tmp_path / "z.zip", target)
    assert (target / "a").read_bytes() == b"1" and (target / "d1" / "d2" / "f.txt").read_bytes() == b"2"
    assert sorted(p.name for p in out) == ["a", "f.txt"]


def test_a_cached_file_of_the_wrong_size_is_refused_without_a_request(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: pytest.fail("no request for a cached file"))
    (tmp_path / "c.bin").write_bytes(b"12345")
    with pytest.raises(ValueError, match=r"c\.bin: expected 4 bytes, got 5; delete it and download again$"):
        dl.download("http://x/c.bin", tmp_path / "c.bin", expected_size=4)
    assert dl.download("http://x/c.bin", tmp_path / "c.bin", expected_size=5) == tmp_path / "c.bin"


def test_a_complete_part_is_resumed_with_a_range_request_and_a_user_agent(tmp_path, monkeypatch):
    import hashlib
    seen = []

    def server(req, timeout):
        seen.append((req.get_header("Range"), req.get_header("User-agent")))
        raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable", {}, None)
    monkeypatch.setattr(dl.urllib.request, "urlopen", server)
    (tmp_path / "p.bin.part").write_bytes(b"abcd")
    dest = dl.download("http://x/p.bin", tmp_path / "p.bin", sha256=hashlib.sha256(b"abcd").hexdigest(),
                       expected_size=4)
    assert dest.read_bytes() == b"abcd" and seen == [("bytes=4-", "graphattn")]


def test_binary_marker_before_a_name_starting_with_x(tmp_path):
    (tmp_path / dl.SUMS_FILE).write_text(f"{H} *Xa.bin\n")
    assert dl.read_sums(tmp_path) == {"Xa.bin": H}


def _http_error(code):
    def server(req, timeout):
        raise urllib.error.HTTPError(req.full_url, code, "error", {}, None)
    return server


def test_416_without_a_size_accepts_the_part_and_other_codes_do_not(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", _http_error(416))
    (tmp_path / "q.bin.part").write_bytes(b"xyz")
    assert dl.download("http://x/q.bin", tmp_path / "q.bin").read_bytes() == b"xyz"     # no expected size
    monkeypatch.setattr(dl.urllib.request, "urlopen", _http_error(404))
    (tmp_path / "r.bin.part").write_bytes(b"xyz")
    with pytest.raises(dl.DownloadError, match=r"^could not download http://x/r\.bin: HTTP Error 404: error\. "):
        dl.download("http://x/r.bin", tmp_path / "r.bin", expected_size=3)
    assert not (tmp_path / "r.bin").exists()


class _Resp:
    """A urlopen response: ``status``, ``headers`` and ``read`` over ``body``."""

    def __init__(self, body, status=200, headers=None):
        self.status, self.headers, self._body = status, headers or {}, io.BytesIO(body)

    def read(self, n):
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_a_server_ignoring_range_restarts_the_file_and_the_bar_knows_the_size(tmp_path, monkeypatch):
    import hashlib

    import tqdm.auto
    totals = []
    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: totals.append(k["total"]) or real(*a, **k))
    body = b"0123456789"
    (tmp_path / "s.bin.part").write_bytes(b"01234")        # resumable, but the server answers 200 with everything
    monkeypatch.setattr(dl.urllib.request, "urlopen",
                        lambda req, timeout: _Resp(body, 200, {"Content-Length": str(len(body))}))
    dest = dl.download("http://x/s.bin", tmp_path / "s.bin", sha256=hashlib.sha256(body).hexdigest(),
                       show_progress=False)
    assert dest.read_bytes() == body and totals == [10]
    # no Content-Length: the bar's total is the expected size
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda req, timeout: _Resp(body, 200, {}))
    assert dl.download("http://x/t.bin", tmp_path / "t.bin", expected_size=10,
                       show_progress=False).read_bytes() == body
    assert totals == [10, 10]
