"""Bad input and untrusted files: every case a user can get wrong, what the user sees, and what was lost.

    .venv/bin/python tools/reliability.py [--out DIR] [--publish] [--only NAME ...] [--jobs N]

Each case sets up its files in a fresh temporary folder, runs what a user would run there (``run.py`` as
a subprocess with ``--checkpoint_dir`` inside the folder and a tiny dataset, or the loader / function a
user would call, in a subprocess that reports an error the way ``run.py`` does), and records the exit
status, the last line of stderr, whether a traceback was printed, whether that line names what is wrong
(the file and line, the key or the flag the case broke), and what changed in the folder: a file that was
there before and is gone or changed (``lost``; a log that was only appended to is not lost) and a file or
folder the failed command left behind (a half-written file, an empty run folder).

A case that expects an error passes when: exit status 1, the last stderr line starts with ``error:``
(one line, as ``run.py`` prints it), no traceback, the line names what is wrong, nothing lost, nothing
left behind. A case that expects success (a resumed download, two runs started in the same second)
passes when it exits 0, its own check holds and nothing is lost.

Writes ``reliability.json`` (every row) and ``reliability.md`` (the table) to ``results/reliability/``;
``--publish`` copies both to ``docs/results/reliability/``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
RUN = str(ROOT / "run.py")
TRACEBACK = "Traceback (most recent call last)"
# What run.py reports as one line (run.USER_ERRORS); the function drivers below report the same types.
USER_ERRORS = ("ValueError", "TypeError", "FileNotFoundError")
# Every run.py case: its run folders inside the case's folder, one epoch, one thread, no progress bars.
RUN_FLAGS = ["--checkpoint_dir=saved", "--epochs=1", "--show_progress=false", "--num_threads=1"]
# Folders every case's folder starts with (empty): the run root (--checkpoint_dir), the data cache root
# ($GRAPHATTN_DATA) and a download cache. Whatever a command leaves inside them is judged.
ROOTS = ("saved", "data", "cache")


# --------------------------------------------------------------------------- cases


@dataclass
class Attempt:
    """What a case runs, and how to judge it.

    argv: the command (run in the case's folder). names: strings the error line must contain.
    expect: ``"error"`` or ``"ok"``. allow_new: glob patterns (relative paths) of new files a failed
    command may leave on purpose (a ``.part`` kept for resuming). allow_gone: files the command is meant to
    consume (a ``.part`` completed into the file). check: extra problems found after the command (a list
    of strings, empty when fine). shown: the command as the table prints it.
    """

    argv: list[str]
    names: list[str] = field(default_factory=list)
    expect: str = "error"
    allow_new: list[str] = field(default_factory=list)
    check: Callable[[Path], list[str]] | None = None
    allow_gone: list[str] = field(default_factory=list)
    shown: str = ""
    timeout: float = 300.0


@dataclass
class Case:
    name: str
    domain: str
    what: str
    setup: Callable[[Path], Attempt]


CASES: list[Case] = []


def case(domain: str, what: str):
    def deco(fn: Callable[[Path], Attempt]) -> Callable[[Path], Attempt]:
        CASES.append(Case(fn.__name__.removeprefix("case_"), domain, what, fn))
        return fn
    return deco


def run_py(*args: str, names: list[str], **kw) -> Attempt:
    argv = [PYTHON, RUN, *args, *RUN_FLAGS]
    return Attempt(argv, names, shown="run.py " + " ".join(args), **kw)


_DRIVER = """\
import sys
sys.path.insert(0, {root!r})
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)   # run.USER_ERRORS
def main():
{body}
try:
    main()
except USER_ERRORS as exc:   # what run.py prints for these; anything else shows its traceback
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    sys.exit(1)
"""


def driver(body: str, names: list[str], shown: str, **kw) -> Attempt:
    """A user calling a library function from Python, errors reported the way run.py reports them."""
    code = _DRIVER.format(root=str(ROOT), body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    return Attempt([PYTHON, "-c", code], names, shown=shown, **kw)


def _server_code(cut: bool) -> str:
    """A loopback HTTP server (Range requests honoured) serving ``BODY``; ``cut`` drops every reply halfway."""
    return f"BODY = {_PAYLOAD_CODE}\nCUT = {'len(BODY) // 2' if cut else 0}\n" + _SERVER


# --------------------------------------------------------------------------- fixtures


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def kgat_folder(folder: Path, users: int = 8, items: int = 12, train: str | None = None, test: str | None = None,
                kg: str | None = None, lists: bool = False) -> Path:
    """A tiny KGAT-format dataset: user u has items u..u+3 in train and u+4 in test; a 2-relation KG."""
    tr = "".join(f"{u} {' '.join(str((u + j) % items) for j in range(4))}\n" for u in range(users))
    te = "".join(f"{u} {(u + 4) % items}\n" for u in range(users))
    k = "".join(f"{i} {i % 2} {items + i % 3}\n" for i in range(items))
    write(folder / "train.txt", tr if train is None else train)
    write(folder / "test.txt", te if test is None else test)
    write(folder / "kg_final.txt", k if kg is None else kg)
    if lists:
        for kind, n in (("user", users), ("item", items), ("entity", items + 3), ("relation", 2)):
            write(folder / f"{kind}_list.txt", "org_id remap_id\n" + "".join(f"{kind}{i} {i}\n" for i in range(n)))
    return folder


def atomic_folder(folder: Path, header: str = "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                  rows: list[str] | None = None) -> Path:
    """A tiny RecBole atomic dataset ``toy.inter`` (10 users x 6 interactions)."""
    if rows is None:
        rows = [f"u{u}\ti{(u * 3 + j) % 15}\t{1 + j % 5}\t{u * 100 + j}" for u in range(10) for j in range(6)]
    write(folder / "toy.inter", header + "\n" + "".join(r + "\n" for r in rows))
    return folder


_BASE_RUN: dict[str, Path] = {}


def base_run(cache: Path) -> Path:
    """One finished BPRMF run on a tiny KGAT folder (made once per script run, copied into each case)."""
    if "path" not in _BASE_RUN:
        work = cache / "base"
        shutil.rmtree(work, ignore_errors=True)
        kgat_folder(work / "ds")
        (work / "saved").mkdir()
        proc = subprocess.run([PYTHON, RUN, "--model", "BPRMF", "--dataset", "ds", *RUN_FLAGS], cwd=work,
                              capture_output=True, text=True, timeout=600, env=_env(work))
        if proc.returncode != 0:
            raise RuntimeError(f"the base run failed:\n{proc.stderr[-3000:]}")
        (run_dir,) = (work / "saved").iterdir()
        _BASE_RUN["path"] = work
        _BASE_RUN["run"] = run_dir
    return _BASE_RUN["path"]


def copy_base(tmp: Path) -> Path:
    """The base run's dataset and run folder, copied into ``tmp``; returns the run folder."""
    base = base_run(CACHE)
    shutil.copytree(base / "ds", tmp / "ds")
    shutil.copytree(base / "saved", tmp / "saved", dirs_exist_ok=True)
    (run_dir,) = (tmp / "saved").iterdir()
    return run_dir


CACHE = Path(tempfile.gettempdir())  # replaced in main() by a fresh folder


# --------------------------------------------------------------------------- recsys


@case("recsys", "non-integer id in train.txt")
def case_train_non_integer(tmp: Path) -> Attempt:
    ds = kgat_folder(tmp / "ds")
    lines = (ds / "train.txt").read_text().splitlines()
    lines[2] = "2 3 x4 5"
    write(ds / "train.txt", "\n".join(lines) + "\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["train.txt", "line 3", "x4"])


@case("recsys", "non-integer id in test.txt")
def case_test_non_integer(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", test="0 4\n1 5.0\n2 6\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["test.txt", "line 2", "5.0"])


@case("recsys", "non-integer id in kg_final.txt")
def case_kg_non_integer(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", kg="0 0 12\n1 r1 13\n")
    return run_py("--model", "KGAT", "--dataset", "ds", names=["kg_final.txt", "line 2", "r1"])


@case("recsys", "kg_final.txt line with too few fields")
def case_kg_short_line(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", kg="0 0 12\n1 1 13\n2 14\n")
    return run_py("--model", "KGAT", "--dataset", "ds", names=["kg_final.txt", "line 3"])


@case("recsys", "negative id in train.txt")
def case_train_negative(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", train="0 1 2\n1 -3 4\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["train.txt", "line 2", "-3"])


@case("recsys", "empty train.txt")
def case_train_empty(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", train="")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["train.txt", "empty"])


@case("recsys", "test user absent from train.txt (allowed: a cold-start user; trains with a warning)")
def case_test_user_not_in_train(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", test="0 4\n1 5\n20 6\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", expect="ok",
                  names=["test.txt: 1 test user(s) never appear in train.txt (first: user 20)"])


@case("untrusted", "--dataset given with ../ : read where named, nothing written beside it")
def case_dataset_dotdot_path(tmp: Path) -> Attempt:
    kgat_folder(tmp / "elsewhere" / "ds")
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())

    def check(folder: Path) -> list[str]:
        now = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        extra = [str(p) for p in now if p not in before and p.parts[0] != "saved"]
        return [f"written outside the run folder: {extra}"] if extra else []
    return run_py("--model", "BPRMF", "--dataset", f"../{tmp.name}/elsewhere/ds", expect="ok", names=[],
                  check=check)


@case("recsys", "item id beyond the item count (item_list.txt), in test.txt only")
def case_test_item_out_of_range(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", lists=True, test="0 4\n1 5\n2 40\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["test.txt", "line 3", "40", "item_list.txt"])


@case("recsys", "KG relation id beyond relation_list.txt")
def case_kg_relation_out_of_range(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds", lists=True, kg="0 0 12\n1 1 13\n2 7 14\n")
    return run_py("--model", "KGAT", "--dataset", "ds", names=["kg_final.txt", "line 3", "7", "relation_list.txt"])


@case("recsys", "RecBole atomic file missing a header column")
def case_atomic_missing_column(tmp: Path) -> Attempt:
    atomic_folder(tmp / "ds", header="user_id:token\titem:token\trating:float\ttimestamp:float")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["toy.inter", "item_id", "ITEM_ID_FIELD"])


@case("recsys", "RecBole atomic file with a mistyped header type")
def case_atomic_bad_type(tmp: Path) -> Attempt:
    atomic_folder(tmp / "ds", header="user_id:token\titem_id:token\trating:flaot\ttimestamp:float")
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["toy.inter", "line 1", "rating:flaot"])


@case("recsys", "RecBole atomic file with a short line")
def case_atomic_short_line(tmp: Path) -> Attempt:
    rows = [f"u{u}\ti{(u * 3 + j) % 15}\t{1 + j % 5}\t{u * 100 + j}" for u in range(10) for j in range(6)]
    rows[4] = "u0\ti4\t3"
    atomic_folder(tmp / "ds", rows=rows)
    return run_py("--model", "BPRMF", "--dataset", "ds", names=["toy.inter", "line 6"])


@case("recsys", "unknown --dataset (suggests the nearest)")
def case_unknown_dataset(tmp: Path) -> Attempt:
    return run_py("--model", "BPRMF", "--dataset", "ml-100", names=["'ml-100'", "Did you mean", "ml-100k"])


@case("recsys", "unknown --model (suggests the nearest)")
def case_unknown_model(tmp: Path) -> Attempt:
    return run_py("--model", "KGTA", "--dataset", "ml-100k", names=["'KGTA'", "Did you mean", "KGAT"])


@case("recsys", "a directory that is not a dataset")
def case_not_a_dataset(tmp: Path) -> Attempt:
    write(tmp / "photos" / "cat.jpg", b"\xff\xd8\xff\xe0not really")
    write(tmp / "photos" / "notes.md", "hello\n")
    return run_py("--model", "BPRMF", "--dataset", "photos", names=["photos", "train.txt", ".inter"])


# --------------------------------------------------------------------------- config


@case("config", "unknown key --epochz (names the nearest)")
def case_config_unknown_key(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--epochz=3", names=["'epochz'", "'epochs'"])


@case("config", "wrong type --epochs=ten")
def case_config_wrong_type(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    a = run_py("--model", "BPRMF", "--dataset", "ds", "--epochs=ten", names=["'epochs'", "expected int", "ten"])
    a.argv.remove("--epochs=1")
    return a


@case("config", "YAML syntax error in a --config_files file")
def case_config_yaml_syntax(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    write(tmp / "my.yaml", "epochs: 2\nlearning_rate: [0.1\nseed: 3\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--config_files", "my.yaml",
                  names=["my.yaml", "line 3"])


@case("config", "a config file that does not exist")
def case_config_missing_file(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--config_files", "nope.yaml", names=["nope.yaml"])


@case("config", "unknown key inside a config file")
def case_config_file_unknown_key(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    write(tmp / "my.yaml", "epochs: 1\nlearnin_rate: 0.1\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--config_files", "my.yaml",
                  names=["my.yaml", "'learnin_rate'", "'learning_rate'"])


@case("config", "wrong type inside a config file")
def case_config_file_wrong_type(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    write(tmp / "my.yaml", "train_batch_size: '64'\n")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--config_files", "my.yaml",
                  names=["my.yaml", "'train_batch_size'", "expected int"])


@case("config", "contradictory settings: topk empty")
def case_config_topk_empty(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--topk=[]", names=["topk"])


@case("config", "contradictory settings: valid_metric not among the metrics")
def case_config_valid_metric(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    return run_py("--model", "BPRMF", "--dataset", "ds", "--valid_metric=recall@50", names=["valid_metric", "recall@50"])


# --------------------------------------------------------------------------- checkpoints


def _resume(run_dir: Path, *extra: str, names: list[str], model: str = "BPRMF", **kw) -> Attempt:
    rel = run_dir.relative_to(run_dir.parents[1])
    a = run_py("--model", model, "--dataset", "ds", f"--resume={rel}", *extra, names=names, **kw)
    a.argv = [x for x in a.argv if x != "--epochs=1"] + ["--epochs=2"]
    return a


@case("checkpoints", "truncated last.pt, --resume")
def case_ckpt_truncated(tmp: Path) -> Attempt:
    run_dir = copy_base(tmp)
    data = (run_dir / "last.pt").read_bytes()
    (run_dir / "last.pt").write_bytes(data[: len(data) // 2])
    return _resume(run_dir, names=["last.pt"])


@case("checkpoints", "--resume a run folder of another model")
def case_ckpt_other_model_folder(tmp: Path) -> Attempt:
    run_dir = copy_base(tmp)
    return _resume(run_dir, model="KGAT", names=["BPRMF", "KGAT"])


@case("checkpoints", "last.pt holding another model's weights, --resume")
def case_ckpt_other_model_weights(tmp: Path) -> Attempt:
    import torch
    run_dir = copy_base(tmp)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    state["model"] = {"encoder.weight": torch.zeros(3, 4), "decoder.bias": torch.zeros(4)}
    torch.save(state, run_dir / "last.pt")
    return _resume(run_dir, names=["last.pt"])


_EVIL = """
import os, pickle
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
with open({path!r}, "wb") as fh:
    pickle.dump({{"epoch": 1, "model": Evil()}}, fh)
"""


@case("checkpoints", "pickle carrying code as last.pt (refused by weights_only=True)")
def case_ckpt_crafted_pickle(tmp: Path) -> Attempt:
    run_dir = copy_base(tmp)
    marker = tmp / "PWNED"
    subprocess.run([PYTHON, "-c", _EVIL.format(marker=marker, path=str(run_dir / "last.pt"))], check=True)

    def check(folder: Path) -> list[str]:
        return ["the pickle ran code: marker file created"] if marker.exists() else []
    return _resume(run_dir, names=["last.pt"], check=check)


@case("checkpoints", "checkpoint whose shapes do not match the dataset (dataset grew), --resume")
def case_ckpt_shape_mismatch(tmp: Path) -> Attempt:
    run_dir = copy_base(tmp)
    kgat_folder(tmp / "ds", users=11, items=15)  # the dataset changed after the run was saved
    return _resume(run_dir, names=["last.pt"])


@case("checkpoints", "--resume of a folder that is not a run folder")
def case_ckpt_not_run_folder(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    (tmp / "elsewhere").mkdir()
    return run_py("--model", "BPRMF", "--dataset", "ds", "--resume=elsewhere", names=["elsewhere", "config.yaml"])


# --------------------------------------------------------------------------- archives and downloads


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return write(path, buf.getvalue())


@case("archives", "zip member with ../ (refused, nothing written)")
def case_zip_dotdot(tmp: Path) -> Attempt:
    _zip(tmp / "data.zip", {"ok.txt": b"fine\n", "../escaped.txt": b"pwned\n"})
    return driver("""
        from graphattn.download import safe_unzip
        safe_unzip("data.zip", "target")
    """, names=["data.zip", "../escaped.txt", "outside"], shown="safe_unzip('data.zip', 'target')",
        check=lambda d: ["a member was written outside the target"] if (d / "escaped.txt").exists() else [])


@case("archives", "zip member with an absolute path (refused)")
def case_zip_absolute(tmp: Path) -> Attempt:
    _zip(tmp / "data.zip", {"ok.txt": b"fine\n", str(tmp / "abs.txt"): b"pwned\n"})
    return driver("""
        from graphattn.download import safe_unzip
        safe_unzip("data.zip", "target")
    """, names=["data.zip", "abs.txt", "absolute"], shown="safe_unzip('data.zip', 'target')",
        check=lambda d: ["the absolute member was written"] if (d / "abs.txt").exists() else [])


@case("archives", "corrupted kg_final.txt.zip in the data cache, run.py --dataset last-fm")
def case_zip_corrupt(tmp: Path) -> Attempt:
    folder = tmp / "data" / "last-fm"
    good = _zip(tmp / "good.zip", {"kg_final.txt": b"0 0 1\n" * 2000})
    data = good.read_bytes()
    good.unlink()
    write(folder / "kg_final.txt.zip", data[: len(data) // 3])  # an interrupted copy
    return run_py("--model", "KGAT", "--dataset", "last-fm", names=["kg_final.txt.zip"])


_SERVER = """
import http.server, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        rng = self.headers.get("Range")
        start = int(rng[6:].split("-")[0]) if rng else 0
        body = BODY[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:CUT] if CUT else body)   # CUT: the connection drops halfway
        self.wfile.flush()
        self.close_connection = True
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
URL = f"http://127.0.0.1:{srv.server_address[1]}/train.txt"
"""
_PAYLOAD_CODE = 'b"".join(f"{u} {u + 1} {u + 2}\\n".encode() for u in range(20000))'
_PAYLOAD = b"".join(f"{u} {u + 1} {u + 2}\n".encode() for u in range(20000))  # the same bytes as _PAYLOAD_CODE


@case("downloads", "download whose sha256 does not match (nothing kept)")
def case_download_hash_mismatch(tmp: Path) -> Attempt:
    return driver(f"""
        {_indent(_server_code(False))}
        from graphattn.download import download
        download(URL, "cache/train.txt", sha256="0" * 64, show_progress=False)
    """, names=["train.txt", "sha256 mismatch"], shown="download(url, 'cache/train.txt', sha256=<wrong>)")


@case("downloads", "download interrupted halfway (the partial file is kept as .part only)")
def case_download_interrupted(tmp: Path) -> Attempt:
    def check(folder: Path) -> list[str]:
        out = []
        if (folder / "cache" / "train.txt").exists():
            out.append("the partial download was renamed to cache/train.txt")
        return out
    return driver(f"""
        {_indent(_server_code(True))}
        from graphattn.download import download
        download(URL, "cache/train.txt", show_progress=False)
    """, names=["train.txt", "partial"], shown="download(url, 'cache/train.txt')  # connection drops halfway",
        allow_new=["cache/train.txt.part"], check=check)


@case("downloads", "the next download after an interruption resumes (.part completed, verified)")
def case_download_resume(tmp: Path) -> Attempt:
    write(tmp / "cache" / "train.txt.part", _PAYLOAD[: len(_PAYLOAD) // 2])
    sha = hashlib.sha256(_PAYLOAD).hexdigest()

    def check(folder: Path) -> list[str]:
        got = folder / "cache" / "train.txt"
        out = []
        if not got.exists() or hashlib.sha256(got.read_bytes()).hexdigest() != sha:
            out.append("cache/train.txt missing or not the full file")
        if (folder / "cache" / "train.txt.part").exists():
            out.append("the .part file was left behind")
        return out
    return driver(f"""
        {_indent(_server_code(False))}
        from graphattn.download import download
        download(URL, "cache/train.txt", sha256={sha!r}, show_progress=False)
    """, names=[], expect="ok", shown="download(url, 'cache/train.txt', sha256=...)  # .part of half the file present",
        check=check, allow_gone=["cache/train.txt.part"])


@case("downloads", "a registered dataset offline, not in the data cache")
def case_download_offline(tmp: Path) -> Attempt:
    # GRAPHATTN_DATA points at the case's empty data folder; GitHub is not reachable from here
    return run_py("--model", "BPRMF", "--dataset", "yelp2018", names=["yelp2018", "kg_final.txt"])


def _indent(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip(), " " * 8).lstrip()


# --------------------------------------------------------------------------- vision and sequence


def _ntu_file(path: Path, frames: int = 3, bodies: int = 2) -> Path:
    lines = [str(frames)]
    for t in range(frames):
        lines.append(str(bodies))
        for b in range(bodies):
            lines.append(f"7200000{b} 0 1 2 1 2 0 0.1 0.2 2")
            lines.append("25")
            for j in range(25):
                v = 0.01 * (t + j + b * 10)
                lines.append(f"{v:.4f} {v:.4f} {2 + v:.4f} 100 200 300 400 0 0 0 1 2")
    return write(path, "\n".join(lines) + "\n")


@case("vision", "skeleton folder holding a file that is not a skeleton file")
def case_vision_not_skeleton(tmp: Path) -> Attempt:
    _ntu_file(tmp / "ntu" / "S001C001P001R001A050.skeleton")
    _ntu_file(tmp / "ntu" / "S001C001P002R001A051.skeleton")
    write(tmp / "ntu" / "S001C001P003R001A052.skeleton", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR binary")
    return run_py("--model", "ISTANet", "--dataset", "ntu-mutual26", "--ntu_skeleton_dir=ntu", "--ntu_frames=4",
                  names=["S001C001P003R001A052.skeleton", "1"])


@case("vision", "skeleton file with a malformed joint line")
def case_vision_bad_skeleton_line(tmp: Path) -> Attempt:
    f = _ntu_file(tmp / "ntu" / "S001C001P001R001A050.skeleton")
    lines = f.read_text().splitlines()
    lines[10] = "0.1 0.2 oops"
    write(f, "\n".join(lines) + "\n")
    return run_py("--model", "ISTANet", "--dataset", "ntu-mutual26", "--ntu_skeleton_dir=ntu", "--ntu_frames=4",
                  names=["S001C001P001R001A050.skeleton", ":11"])


@case("vision", "empty training split (every clip is a test subject)")
def case_vision_empty_split(tmp: Path) -> Attempt:
    # xsub: performer 3 is a test subject, so with only P003 clips the training split is empty
    _ntu_file(tmp / "ntu" / "S001C001P003R001A050.skeleton")
    _ntu_file(tmp / "ntu" / "S001C001P003R001A051.skeleton")
    return run_py("--model", "ISTANet", "--dataset", "ntu-mutual26", "--ntu_skeleton_dir=ntu", "--ntu_frames=4",
                  names=["train", "empty"])


@case("vision", "recording folder whose detections.csv is not text")
def case_vision_binary_csv(tmp: Path) -> Attempt:
    write(tmp / "rec" / "meta.json", json.dumps({"image_width": 640, "image_height": 480,
                                                 "classes": ["tablet", "book"], "labels": ["background", "book"]}))
    write(tmp / "rec" / "gaze.csv", "frame,gx,gy\n0,10,10\n")
    write(tmp / "rec" / "detections.csv", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01")
    return run_py("--model", "IMPN", "--dataset", "gaze_recording", "--recording_dir=rec",
                  names=["detections.csv"])


@case("vision", "image size that the patch size does not divide")
def case_vision_image_size(tmp: Path) -> Attempt:
    return run_py("--model", "DependencyViT", "--dataset", "digits", "--image_size=10",
                  names=["image_size", "patch_size"])


@case("sequence", "paper-format file with a bad line (hull_train_file)")
def case_sequence_bad_line(tmp: Path) -> Attempt:
    write(tmp / "hull.txt", "0.1 0.2 0.5 0.9 0.8 0.1 output 1 2 3 1\n0.1 0.2 0.5 abc 0.8 0.1 output 1 2 3 1\n")
    return run_py("--model", "PointerNet", "--dataset", "convex-hull", "--hull_train_file=hull.txt",
                  "--train_size=8", "--valid_size=8", "--test_size=8", names=["hull.txt", "2"])


@case("sequence", "empty split file (hull_valid_file)")
def case_sequence_empty_split(tmp: Path) -> Attempt:
    write(tmp / "empty.txt", "")
    return run_py("--model", "PointerNet", "--dataset", "convex-hull", "--hull_valid_file=empty.txt",
                  "--train_size=8", "--valid_size=8", "--test_size=8", names=["empty.txt"])


@case("sequence", "split file that does not exist (hull_test_file)")
def case_sequence_missing_file(tmp: Path) -> Attempt:
    return run_py("--model", "PointerNet", "--dataset", "convex-hull", "--hull_test_file=nope.txt",
                  "--train_size=8", "--valid_size=8", "--test_size=8", names=["nope.txt"])


# --------------------------------------------------------------------------- runs


_SAME_SECOND_CHILD = """
import sys, time
from pathlib import Path
import recsys  # noqa: F401  (as run.py: registers BPRMF)
from graphattn.config import Config
from graphattn.training import RunDir
config = Config("BPRMF", "ds", config_dict={"checkpoint_dir": "saved", "show_progress": False})
Path(f"ready-{sys.argv[1]}").touch()
while not Path("go").exists():
    time.sleep(0.01)
time.sleep(max(0.0, float(Path("go").read_text()) + 0.2 - time.time()))  # both at the same instant
run = RunDir.create(config)   # what run.py calls for a new run
(run.path / f"owner-{sys.argv[1]}").touch()
run.close()
"""
_SAME_SECOND_PARENT = """
import subprocess, sys, time
from pathlib import Path
procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(i)], stderr=subprocess.PIPE, text=True) for i in range(2)]
while not all(Path(f"ready-{i}").exists() for i in range(2)):
    if any(p.poll() is not None for p in procs):
        break
    time.sleep(0.01)
Path("go.tmp").write_text(str(int(time.time()) + 2))   # a whole second, two seconds from now
Path("go.tmp").rename("go")
errs = [p.communicate()[1] for p in procs]
if any(p.returncode for p in procs):
    print("error: " + " | ".join(e.strip().splitlines()[-1] for e in errs if e.strip()), file=sys.stderr)
    sys.exit(1)
"""


@case("runs", "two runs creating their run folder in the same second get different folders")
def case_runs_same_second(tmp: Path) -> Attempt:
    kgat_folder(tmp / "ds")
    code = f"CHILD = {_SAME_SECOND_CHILD!r}\n{_SAME_SECOND_PARENT}"

    def check(folder: Path) -> list[str]:
        runs = sorted(p for p in (folder / "saved").iterdir())
        out = []
        if len(runs) != 2:
            out.append(f"expected 2 run folders, found {[r.name for r in runs]}")
        owners = [sorted(q.name for q in r.glob("owner-*")) for r in runs]
        if sorted(sum(owners, [])) != ["owner-0", "owner-1"] or any(len(o) != 1 for o in owners):
            out.append(f"the runs share a folder: {dict(zip([r.name for r in runs], owners))}")
        if any(not (r / "config.yaml").is_file() for r in runs):
            out.append("a run folder lacks its config.yaml")
        if len({r.name[: len("BPRMF-ds-YYYYmmdd-HHMMSS")] for r in runs}) != 1:
            out.append(f"the two folders were not created in the same second: {[r.name for r in runs]}")
        return out
    return Attempt([PYTHON, "-c", code], [], expect="ok", check=check,
                   shown="two processes call RunDir.create (as run.py does) at the same instant")


# --------------------------------------------------------------------------- running a case


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GRAPHATTN_DATA": str(folder / "data"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "TQDM_DISABLE": "1"})
    return env


def snapshot(folder: Path) -> tuple[dict[str, bytes], set[str]]:
    """``({relative file path: contents}, {relative folder paths})`` of everything under ``folder``."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        for d in dirnames:
            dirs.add(str(rel / d))
        for f in filenames:
            files[str(rel / f)] = (Path(dirpath) / f).read_bytes()
    return files, dirs


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def run_case(c: Case, parent: Path | None = None) -> dict:
    """Set up, run and judge one case in a fresh folder (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix=f"rel-{c.name}-", dir=parent))
    for root in ROOTS:  # what a user who has run before already has: the run root, the data cache root
        (folder / root).mkdir()
    try:
        try:
            attempt = c.setup(folder)
        except Exception as exc:  # noqa: BLE001 - a broken fixture is reported as a failed row, not a crash
            shutil.rmtree(folder, ignore_errors=True)
            return {"case": c.name, "domain": c.domain, "what": c.what, "command": "(setup failed)",
                    "expect": "error", "exit": None, "last_line": f"setup failed: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}", "traceback": False, "names": [], "names_ok": False,
                    "clear": False, "lost": [], "left_behind": [], "kept_on_purpose": [],
                    "problems": ["the case could not be set up"], "passed": False, "seconds": 0.0}
        before_files, before_dirs = snapshot(folder)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(attempt.argv, cwd=folder, capture_output=True, text=True, env=_env(folder),
                                  timeout=attempt.timeout)
            code, stderr = proc.returncode, proc.stderr
        except OSError as exc:  # the command could not be started at all
            code, stderr = None, f"could not start the command: {exc}"
        except subprocess.TimeoutExpired as exc:
            code, stderr = None, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            stderr += f"\n(timed out after {attempt.timeout:.0f} s)"
        seconds = time.perf_counter() - t0
        after_files, after_dirs = snapshot(folder)
        problems = attempt.check(folder) if attempt.check else []
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    lost = []
    for path, data in before_files.items():
        if path not in after_files and any(fnmatch(path, g) for g in attempt.allow_gone):
            continue
        if path not in after_files:
            lost.append(f"{path} removed")
        elif after_files[path] != data and not after_files[path].startswith(data):  # appending a log is fine
            lost.append(f"{path} changed ({_digest(data)} -> {_digest(after_files[path])})")
    new = sorted((set(after_files) - set(before_files)) | (after_dirs - before_dirs))
    allowed = [p for p in new if any(fnmatch(p, g) for g in attempt.allow_new)]
    left = [p for p in new if p not in allowed] if attempt.expect == "error" else []
    # a new folder that only holds new things is reported once, as the folder
    left = [p for p in left if not any(p.startswith(q + os.sep) for q in left)]

    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if attempt.expect == "ok" and attempt.names:  # what the user saw: the warning the case looks for
        last = next((line.strip() for line in lines if attempt.names[0] in line), last)
    traceback = TRACEBACK in stderr
    # an error must be named on its one line; an accepted input's warning anywhere on stderr
    names_ok = all(n in (last if attempt.expect == "error" else stderr) for n in attempt.names)
    if attempt.expect == "error":
        clear = code == 1 and last.startswith("error: ") and not traceback and names_ok
    else:
        clear = code == 0 and not traceback and names_ok
    passed = clear and not lost and not left and not problems
    return {"case": c.name, "domain": c.domain, "what": c.what, "command": attempt.shown, "expect": attempt.expect,
            "exit": code, "last_line": last[:400], "traceback": traceback, "names": attempt.names,
            "names_ok": names_ok, "clear": clear, "lost": lost, "left_behind": left, "kept_on_purpose": allowed,
            "problems": problems, "passed": passed, "seconds": round(seconds, 1)}


# --------------------------------------------------------------------------- report


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict]) -> str:
    head = ("| # | domain | case | command | exit | what the user saw (last stderr line) | traceback | names it | "
            "lost / left behind | pass |\n|---|---|---|---|---|---|---|---|---|---|\n")
    body = []
    for i, r in enumerate(rows, 1):
        damage = "; ".join(r["lost"] + [f"left {p}" for p in r["left_behind"]] + r["problems"]) or "nothing"
        names = "yes" if r["names_ok"] else "NO: wants " + ", ".join(r["names"])
        body.append(f"| {i} | {r['domain']} | {_cell(r['what'])} | `{_cell(r['command'])}` | {r['exit']} | "
                    f"{_cell(r['last_line']) or '(nothing)'} | {'YES' if r['traceback'] else 'no'} | "
                    f"{names if r['expect'] == 'error' or r['names'] else 'n/a (expects success)'} | {_cell(damage)} | "
                    f"{'pass' if r['passed'] else 'FAIL'} |")
    return head + "\n".join(body) + "\n"


def totals(rows: list[dict]) -> dict:
    errors = [r for r in rows if r["expect"] == "error"]
    return {"cases": len(rows), "error_cases": len(errors),
            "clear_errors": sum(r["clear"] for r in errors),
            "success_cases_ok": sum(r["clear"] and not r["problems"] for r in rows if r["expect"] == "ok"),
            "success_cases": len(rows) - len(errors),
            "something_lost": sum(bool(r["lost"]) for r in rows),
            "left_behind": sum(bool(r["left_behind"]) for r in rows),
            "tracebacks": sum(r["traceback"] for r in rows),
            "passed": sum(r["passed"] for r in rows)}


def totals_line(t: dict) -> str:
    return (f"cases tried: {t['cases']}; clear errors: {t['clear_errors']} of {t['error_cases']}; "
            f"expected successes that held: {t['success_cases_ok']} of {t['success_cases']}; "
            f"something lost: {t['something_lost']}; something left behind: {t['left_behind']}; "
            f"tracebacks: {t['tracebacks']}; passed: {t['passed']} of {t['cases']}")


def run_cases(cases: list[Case], jobs: int = 1, parent: Path | None = None) -> list[dict]:
    from tqdm.auto import tqdm
    if any(c.setup.__name__.startswith("case_ckpt_") and c.name != "ckpt_not_run_folder" for c in cases):
        try:
            base_run(CACHE)  # made once, before the cases that copy it run in parallel
        except RuntimeError as exc:
            print(f"warning: {str(exc).splitlines()[0]}; the checkpoint cases will fail", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_case, c, parent) for c in cases]
        rows = []
        for f in tqdm(futures, desc="cases", unit="case"):
            rows.append(f.result())
    return rows


def main(argv: list[str] | None = None) -> int:
    from graphattn.results import Results, add_output_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_args(parser, "reliability")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these cases")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    args = parser.parse_args(argv)
    cases = CASES if not args.only else [c for c in CASES if c.name in args.only]
    unknown = set(args.only or []) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; cases: {', '.join(c.name for c in CASES)}")

    global CACHE
    CACHE = Path(tempfile.mkdtemp(prefix="reliability-"))
    try:
        rows = run_cases(cases, args.jobs)
    finally:
        shutil.rmtree(CACHE, ignore_errors=True)
    t = totals(rows)
    table = markdown(rows)
    print(table)
    print(totals_line(t))

    out = Results.from_args("reliability", args)
    out.write_json("reliability.json", {"totals": t, "rows": rows})
    md = out.path("reliability.md")
    from graphattn.io import atomic_write_text
    atomic_write_text(md, f"# Reliability cases\n\nCommand: `{out.command}`\n\n{totals_line(t)}\n\n{table}")
    out.copy_file(md)
    return 0 if t["passed"] == t["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
