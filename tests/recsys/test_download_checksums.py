"""Published checksums (git blob sha1, sha256) of downloaded files, against a throw-away HTTP server on
127.0.0.1: a good file passes, a corrupted one is deleted with one line naming file, URL and hashes, a partial
file resumes and is then verified, and the blob id equals ``git hash-object``."""
import hashlib
import io
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from recsys.data import registry
from graphattn.download import SUMS_FILE, download, git_blob_sha1, hashes_of, read_sums

PAYLOAD = bytes(np.random.default_rng(18).integers(0, 256, 200_000, dtype=np.uint8))


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_blob_sha1_equals_git_hash_object(tmp_path):
    for name, data in [("empty", b""), ("hello", b"hello\n"), ("payload", PAYLOAD)]:
        path = tmp_path / name
        path.write_bytes(data)
        assert git_blob_sha1(path) == blob_sha1(data)
        assert hashes_of(path)["sha256"] == hashlib.sha256(data).hexdigest()
    # known git ids, independent of the formula above
    assert git_blob_sha1(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"
    if shutil.which("git"):  # `git hash-object` only reads the file (no -w: nothing is written to any repo)
        out = subprocess.run(["git", "hash-object", str(tmp_path / "payload")], capture_output=True, text=True,
                             check=True, cwd=tmp_path).stdout.strip()
        assert git_blob_sha1(tmp_path / "payload") == out


def test_good_file_passes_and_is_not_recorded(tmp_path, server):
    base, h = server
    h.files["/train.txt"] = PAYLOAD
    dest = download(base + "/train.txt", tmp_path / "train.txt", show_progress=False,
                    git_sha1=blob_sha1(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert dest.read_bytes() == PAYLOAD
    assert SUMS_FILE not in os.listdir(tmp_path)  # published sums need no trust on first use
    n = len(h.log)
    download(base + "/train.txt", dest, git_sha1=blob_sha1(PAYLOAD), show_progress=False)  # cached, verified
    assert len(h.log) == n


@pytest.mark.parametrize("kind", ["git_sha1", "sha256"])
def test_corrupted_download_is_deleted_with_one_clear_line(tmp_path, server, kind):
    base, h = server
    h.files["/test.txt"] = PAYLOAD[:-1] + b"!"          # what the server sends is not what was published
    good = {"git_sha1": blob_sha1(PAYLOAD), "sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    bad = {"git_sha1": blob_sha1(h.files["/test.txt"]), "sha256": hashlib.sha256(h.files["/test.txt"]).hexdigest()}
    label = {"git_sha1": "git blob sha1", "sha256": "sha256"}[kind]
    with pytest.raises(ValueError) as err:
        download(base + "/test.txt", tmp_path / "test.txt", show_progress=False, **{kind: good[kind]})
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{tmp_path / 'test.txt'}: the file downloaded from {base}/test.txt does not verify" in msg
    assert f"{label} mismatch, expected {good[kind]}, got {bad[kind]}" in msg and "it was deleted" in msg
    assert os.listdir(tmp_path) == []                   # neither the file nor a .part to resume
    # a published sha256 that holds does not excuse a wrong blob id
    h.files["/test.txt"] = PAYLOAD
    with pytest.raises(ValueError, match="git blob sha1 mismatch"):
        download(base + "/test.txt", tmp_path / "test.txt", show_progress=False,
                 git_sha1="0" * 40, sha256=good["sha256"])
    assert os.listdir(tmp_path) == []


def test_partial_file_resumes_then_verifies(tmp_path, server):
    base, h = server
    h.files["/kg_final.txt"] = PAYLOAD
    (tmp_path / "kg_final.txt.part").write_bytes(PAYLOAD[:77_777])
    dest = download(base + "/kg_final.txt", tmp_path / "kg_final.txt", git_sha1=blob_sha1(PAYLOAD),
                    show_progress=False)
    assert dest.read_bytes() == PAYLOAD and h.log == [("/kg_final.txt", "bytes=77777-")]
    # a part whose start is wrong resumes into a file that does not verify: deleted, the next call starts clean
    (tmp_path / "again.part").write_bytes(b"x" * 1000)
    h.files["/again"] = PAYLOAD
    with pytest.raises(ValueError, match="git blob sha1 mismatch.*it was deleted"):
        download(base + "/again", tmp_path / "again", git_sha1=blob_sha1(PAYLOAD), show_progress=False)
    assert not (tmp_path / "again.part").exists()
    assert download(base + "/again", tmp_path / "again", git_sha1=blob_sha1(PAYLOAD),
                    show_progress=False).read_bytes() == PAYLOAD


def test_cached_file_that_changed_is_refused(tmp_path, server):
    base, h = server
    (tmp_path / "train.txt").write_bytes(PAYLOAD + b"\n")
    with pytest.raises(ValueError, match=rf"train\.txt: git blob sha1 mismatch, expected {blob_sha1(PAYLOAD)}"):
        download(base + "/train.txt", tmp_path / "train.txt", git_sha1=blob_sha1(PAYLOAD), show_progress=False)
    assert h.log == []                                  # checked offline


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def test_registry_lists_published_sums_for_every_kgat_file():
    sums = registry.KGAT_CHECKSUMS
    for name in registry.KGAT_DATASETS:
        base = registry.KGAT_BASE.format(name=name)
        kg = "kg_final.txt" if name == "last-fm" else "kg_final.txt.zip"
        for f in ("train.txt", "test.txt", kg):
            assert len(sums[base + f]["git_sha1"]) == 40, (name, f)
    assert sum("sha256" in v for v in sums.values()) == 4
    assert sums[registry.KGAT_BASE.format(name="amazon-book") + "train.txt"]["git_sha1"] == \
        "af17875a232fbcf27f08270c77fecefe9e4d9806"


def test_fetch_kgat_verifies_against_the_registry(tmp_path, server, monkeypatch):
    base, h = server
    train, test, kg = b"0 0 1\n1 1 2\n", b"0 2\n1 0\n", b"0 0 3\n1 0 4\n2 1 3\n"
    h.files.update({"/last-fm/train.txt": train, "/last-fm/test.txt": test, "/last-fm/kg_final.txt": kg,
                    "/yelp2018/train.txt": train, "/yelp2018/test.txt": test + b"2 1\n",
                    "/yelp2018/kg_final.txt.zip": _zip("kg_final.txt", kg)})
    url = base + "/{name}/"
    monkeypatch.setattr(registry, "KGAT_BASE", url)
    published = {url.format(name=n) + f: {"git_sha1": blob_sha1(data)} for n, f, data in [
        ("last-fm", "train.txt", train), ("last-fm", "test.txt", test), ("last-fm", "kg_final.txt", kg),
        ("yelp2018", "train.txt", train), ("yelp2018", "test.txt", test),           # not what is served
        ("yelp2018", "kg_final.txt.zip", h.files["/yelp2018/kg_final.txt.zip"])]}
    monkeypatch.setattr(registry, "KGAT_CHECKSUMS", published)
    # last-fm: the KG is a plain kg_final.txt there (the .zip is a 404), all three verify
    folder = registry.fetch_kgat("last-fm", {"data_path": str(tmp_path)}, show_progress=False)
    assert (folder / "kg_final.txt").read_bytes() == kg and (folder / "test.txt").read_bytes() == test
    assert set(read_sums(folder)) == set()                # optional name lists 404 here: nothing recorded
    # yelp2018: test.txt differs from its published blob id -> deleted, one line naming file, URL and hashes
    with pytest.raises(ValueError, match=rf"yelp2018/test\.txt: the file downloaded from {base}/yelp2018/test\.txt "
                                         rf"does not verify \(git blob sha1 mismatch, expected {blob_sha1(test)}, "
                                         rf"got {blob_sha1(test + b'2 1' + bytes([10]))}\); it was deleted"):
        registry.fetch_kgat("yelp2018", {"data_path": str(tmp_path)}, show_progress=False)
    assert not (tmp_path / "yelp2018" / "test.txt").exists() and not (tmp_path / "yelp2018" / "test.txt.part").exists()
    assert (tmp_path / "yelp2018" / "train.txt").exists() and (tmp_path / "yelp2018" / "kg_final.txt").exists()
