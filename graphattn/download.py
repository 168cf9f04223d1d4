"""Fetching dataset files: resumable HTTP download with verification, and a zip extractor that refuses
members escaping the target directory.

Integrity: published checksums are checked when given: the git blob id (``git_sha1``, the sha1 of
``b"blob <size>\0" + bytes``, what ``git hash-object`` prints and what a GitHub repository lists for each
file) and / or a sha256. A file with no published checksum falls back to trust on first use: the sha256 of
its first complete download is recorded in ``<cache>/SHA256SUMS`` and later downloads / uses are checked
against it. A download that does not verify is deleted, with one line naming the file, the URL and the
expected and actual hashes.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from graphattn.io import atomic_open, atomic_write_bytes

log = logging.getLogger(__name__)

SUMS_FILE = "SHA256SUMS"
_CHUNK = 1 << 20


class DownloadError(FileNotFoundError):
    """A data file is not in the cache and could not be fetched now (offline, refused, cut off halfway).

    A ``FileNotFoundError`` (so an ``OSError``): what the user lacks is the file, and ``run.py`` reports a
    missing file as one line with what to do, not as a traceback.
    """


def sha256_of(path: str | os.PathLike) -> str:
    return hashes_of(path)["sha256"]


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\0"`` + its bytes (``git hash-object <path>``)."""
    return hashes_of(path)["git_sha1"]


def hashes_of(path: str | os.PathLike) -> dict[str, str]:
    """``{"sha256": ..., "git_sha1": ...}`` of a file, read once."""
    path = Path(path)
    h256, h1 = hashlib.sha256(), hashlib.sha1()
    h1.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h256.update(block)
            h1.update(block)
    return {"sha256": h256.hexdigest(), "git_sha1": h1.hexdigest()}


def read_sums(directory: str | os.PathLike) -> dict[str, str]:
    path = Path(directory) / SUMS_FILE
    if not path.exists():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path} line {n}: expected '<sha256 hex> <file name>', got {line!r}; "
                             "fix or delete the line")
        out[parts[1].lstrip("*")] = parts[0]
    return out


def record_sum(directory: str | os.PathLike, filename: str, digest: str) -> None:
    directory = Path(directory)
    sums = read_sums(directory)
    sums[filename] = digest
    text = "".join(f"{d}  {f}\n" for f, d in sorted(sums.items()))
    atomic_write_bytes(directory / SUMS_FILE, text.encode())


def verify(path: str | os.PathLike, sha256: str | None = None, expected_size: int | None = None,
           git_sha1: str | None = None) -> str:
    """Check size and hashes of a complete file; returns its sha256. Raises ``ValueError`` on mismatch."""
    path = Path(path)
    if expected_size is not None and path.stat().st_size != expected_size:
        raise ValueError(f"{path}: expected {expected_size} bytes, got {path.stat().st_size}; delete it and "
                         "download again")
    got = hashes_of(path)
    for kind, want in (("git_sha1", git_sha1), ("sha256", sha256)):
        if want is not None and got[kind] != want.strip().lower():
            name = "git blob sha1" if kind == "git_sha1" else "sha256"
            raise ValueError(f"{path}: {name} mismatch, expected {want.strip().lower()}, got {got[kind]}; the file "
                             "is corrupt or was changed upstream; delete it and download again")
    return got["sha256"]


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, expected_size: int | None = None,
             *, git_sha1: str | None = None, timeout: float = 60.0, show_progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` with an HTTP Range request), verify, rename.

    ``git_sha1`` / ``sha256``: published checksums (see the module docstring); every one given is checked.
    Without either, the digest recorded in ``dest.parent/SHA256SUMS`` (if any) is used, and the first
    download records one. An existing ``dest`` is verified and returned without network access.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    published = sha256 is not None or git_sha1 is not None
    want = sha256 if published else read_sums(dest.parent).get(dest.name)
    if dest.exists():
        verify(dest, want, expected_size, git_sha1)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": "graphattn"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and (expected_size is None or have == expected_size):
            resp = None  # the .part is already complete
        else:
            raise _offline_error(url, dest, e) from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _offline_error(url, dest, e) from e
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored Range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else expected_size
            from tqdm.auto import tqdm
            with open(part, "ab" if have else "wb") as fh, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=not show_progress, leave=False) as bar:
                try:
                    for block in iter(lambda: resp.read(_CHUNK), b""):
                        fh.write(block)
                        bar.update(len(block))
                except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                    raise _offline_error(url, dest, e, partial=part) from e
                got = fh.tell()
            # http.client ends a read silently when the connection closes early: compare with the length
            # the server announced, so a cut-off file is never verified against nothing and kept as complete
            if total is not None and got < total:
                raise _offline_error(url, dest, f"connection closed after {got} of {total} bytes", partial=part)
    try:
        digest = verify(part, want, expected_size, git_sha1)
    except ValueError as exc:
        part.unlink(missing_ok=True)  # never kept, never resumed: the next call starts clean
        reason = str(exc).removeprefix(f"{part}: ").split(";")[0]
        fix = ("the published checksum is in recsys/data/registry.py" if published else
               f"remove its line from {dest.parent / SUMS_FILE} to accept the new version")
        raise ValueError(f"{dest}: the file downloaded from {url} does not verify ({reason}); it was deleted. "
                         f"Try again; if it persists the file changed upstream ({fix})") from None
    os.replace(part, dest)
    if want is None and not published:
        record_sum(dest.parent, dest.name, digest)
        log.info("recorded sha256 %s for %s in %s", digest, dest.name, dest.parent / SUMS_FILE)
    return dest


def _offline_error(url: str, dest: Path, err: BaseException | str, partial: Path | None = None) -> DownloadError:
    extra = f" (partial data kept in {partial}; the next call resumes it)" if partial else ""
    unzipped = f", or the unzipped {dest.with_suffix('').name} beside it" if dest.suffix == ".zip" else ""
    return DownloadError(f"could not download {url}: {err}{extra}. To work offline, put the file at {dest}{unzipped} "
                   f"(or set GRAPHATTN_DATA to a folder holding <dataset>/{dest.name}); see data/README.md")


def safe_unzip(zip_path: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Extract ``zip_path`` into ``target``; refuse (``ValueError``) absolute paths, members that resolve
    outside ``target`` and symlinks, before writing anything. Files are written atomically."""
    zip_path, target = Path(zip_path), Path(target)
    try:
        return _unzip(zip_path, target)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # a truncated or damaged archive
        raise ValueError(f"{zip_path}: not a valid zip archive ({exc}); delete it and download it again") from None


def _unzip(zip_path: Path, target: Path) -> list[Path]:
    out = []
    with zipfile.ZipFile(zip_path) as zf:
        bad = zf.testzip()  # every member's CRC, before anything is written
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad!r} fails its CRC check")
        root = target.resolve()
        members = zf.infolist()
        for m in members:
            name = m.filename
            mode = (m.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                raise ValueError(f"{zip_path}: member {name!r} is a symlink; refusing to extract")
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise ValueError(f"{zip_path}: member {name!r} has an absolute path; refusing to extract")
            resolved = (root / name).resolve()
            if resolved != root and root not in resolved.parents:
                raise ValueError(f"{zip_path}: member {name!r} would be written outside {root}; "
                                 "refusing to extract")
        target.mkdir(parents=True, exist_ok=True)
        for m in members:
            dest = (root / m.filename).resolve()
            if m.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, atomic_open(dest, "wb") as fh:
                shutil.copyfileobj(src, fh, _CHUNK)
            out.append(dest)
    return out
