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

    bars = []
    real = tqdm.auto.tqdm

    def spy(*a, **k):
        bars.append(k["disable"])
        return real(*a, **k)
    monkeypatch.setattr(dl.urllib.request, "urlopen",
                        lambda req, timeout: _Resp(b"abc", 200, {"Content-Length": "3"}))
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


def _serve(monkeypatch, body, status=200, length=True):
    headers = {"Content-Length": str(len(body))} if length else {}
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda req, timeout: _Resp(body, status, headers))


def test_the_progress_bar_counts_bytes_of_the_total_from_the_resumed_offset_and_is_cleared(tmp_path, monkeypatch,
                                                                                           capsys):
    body = bytes(range(256)) * 20                               # 5120 bytes
    capsys.readouterr()
    _serve(monkeypatch, body)
    dl.download("http://x/a.bin", tmp_path / "a.bin")
    err = capsys.readouterr().err
    # named after the file, a percentage of the total, SI-scaled byte counts; leave=False: no line is kept
    assert err.startswith("\ra.bin:   0%|") and "| 0.00/5.12k [" in err and "?B/s]" in err
    assert err.endswith("\r") and "\n" not in err
    (tmp_path / "b.bin.part").write_bytes(body[:2048])
    _serve(monkeypatch, body[2048:], 206)
    dl.download("http://x/b.bin", tmp_path / "b.bin")
    err = capsys.readouterr().err
    assert err.startswith("\rb.bin:  40%|") and "| 2.05k/5.12k [" in err     # the bar's glyphs vary with the encoding
    assert err.endswith("\r") and "\n" not in err
    assert (tmp_path / "b.bin").read_bytes() == body
    _serve(monkeypatch, body)
    dl.download("http://x/c.bin", tmp_path / "c.bin", show_progress=False)
    assert capsys.readouterr().err == ""


def test_the_first_download_logs_the_digest_it_records(tmp_path, monkeypatch, caplog):
    import hashlib
    import logging

    body = b"payload"
    _serve(monkeypatch, body)
    with caplog.at_level(logging.INFO, logger=dl.log.name):
        dl.download("http://x/l.bin", tmp_path / "l.bin", show_progress=False)
    digest = hashlib.sha256(body).hexdigest()
    assert [r.getMessage() for r in caplog.records if r.name == dl.log.name] == [
        f"recorded sha256 {digest} for l.bin in {tmp_path / dl.SUMS_FILE}"]
    assert dl.read_sums(tmp_path) == {"l.bin": digest}


def test_the_whole_verification_message_for_a_published_and_a_recorded_sum(tmp_path, monkeypatch):
    import hashlib

    body, other = b"new bytes", b"old bytes"
    _serve(monkeypatch, body)
    want, got = hashlib.sha256(other).hexdigest(), hashlib.sha256(body).hexdigest()
    dest = tmp_path / "v.bin"
    with pytest.raises(ValueError) as err:
        dl.download("http://x/v.bin", dest, sha256=want, show_progress=False)
    assert str(err.value) == (f"{dest}: the file downloaded from http://x/v.bin does not verify (sha256 mismatch, "
                              f"expected {want}, got {got}); it was deleted. Try again; if it persists the file "
                              "changed upstream (the published checksum is in recsys/data/registry.py)")
    dl.record_sum(tmp_path, "v.bin", want)                            # no published sum: the recorded one
    with pytest.raises(ValueError) as err:
        dl.download("http://x/v.bin", dest, show_progress=False)
    assert str(err.value).endswith(f"changed upstream (remove its line from {tmp_path / dl.SUMS_FILE} to accept the "
                                   "new version)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [dl.SUMS_FILE]


def test_a_part_already_removed_by_another_process_still_gives_the_verification_error(tmp_path, monkeypatch):
    # two processes fetching the same file: the other one failed verification first and removed the .part
    _serve(monkeypatch, b"abc")
    real = dl.verify

    def verify_then_lose_the_part(path, *args):
        try:
            return real(path, *args)
        finally:
            path.unlink()
    monkeypatch.setattr(dl, "verify", verify_then_lose_the_part)
    with pytest.raises(ValueError, match=r"w\.bin: the file downloaded from http://x/w\.bin does not verify"):
        dl.download("http://x/w.bin", tmp_path / "w.bin", sha256="0" * 64, show_progress=False)


def test_a_cut_off_body_names_the_url_the_byte_counts_and_the_part(tmp_path, monkeypatch):
    class Short(_Resp):
        def __init__(self):
            super().__init__(b"12345", 200, {"Content-Length": "10"})
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda req, timeout: Short())
    dest = tmp_path / "t.bin"
    with pytest.raises(dl.DownloadError) as err:
        dl.download("http://x/t.bin", dest, show_progress=False)
    assert str(err.value).startswith(f"could not download http://x/t.bin: connection closed after 5 of 10 bytes "
                                     f"(partial data kept in {dest}.part; the next call resumes it). To work offline, "
                                     f"put the file at {dest} ")
    assert (tmp_path / "t.bin.part").read_bytes() == b"12345" and not dest.exists()
