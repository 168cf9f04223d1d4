"""Nothing is written outside the run folder and the data cache (issue #19, "untrusted files and paths").

One fresh interpreter runs ``run.py``'s ``main`` for a model of each domain with an audit hook
(``sys.addaudithook``) that records every file opened for writing and every mkdir / rename / replace /
remove / chmod. The working directory is a temporary folder; the repository must receive nothing, and
every recorded path must lie in the run root (``checkpoint_dir``), the data cache (``$GRAPHATTN_DATA``),
the temporary directory (``$TMPDIR``: torch's compile cache, tempfile) or ``$HOME``'s cache and config
folders (matplotlib's font cache), all of them inside the test's folder.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_DRIVER = r"""
import json, os, sys
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.chmod", "shutil.rmtree",
          "os.symlink", "os.link", "os.truncate", "shutil.copyfile", "shutil.move"}

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            writes.append([event, os.path.abspath(os.fsdecode(path))])
    elif event in EVENTS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                writes.append([event, os.path.abspath(os.fsdecode(a))])

sys.addaudithook(hook)
sys.path.insert(0, sys.argv[1])
import run
codes = [run.main(argv) for argv in json.loads(sys.argv[2])]
print("@@" + json.dumps({"codes": codes, "writes": writes}))
"""

_COMMON = ["--epochs=1", "--checkpoint_dir=saved", "--show_progress=false", "--num_threads=1"]
_RUNS = [
    ["--model", "KGAT", "--dataset", "planted-kg", *_COMMON,
     '--planted_kg={"n_users": 40, "n_items": 60, "n_clusters": 4, "n_noise_entities": 15}',
     "--embedding_size=8", "--kg_embedding_size=8", "--layers=[8,8]", "--mess_dropout=[0.1,0.1]"],
    ["--model", "PointerNet", "--dataset", "convex-hull", *_COMMON, "--train_size=64", "--valid_size=16",
     "--test_size=16", "--n_min=4", "--n_max=6", "--test_n=6", "--hidden_size=8", "--train_batch_size=16"],
    ["--model", "DependencyViT", "--dataset", "digits", *_COMMON, "--depth=2", "--embed_dim=16", "--num_heads=2",
     "--train_batch_size=256"],
]


def test_runs_of_every_domain_write_only_to_the_run_root_and_the_data_cache(tmp_path):
    dirs = {name: tmp_path / name for name in ("work", "data", "tmp", "home")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "GRAPHATTN_DATA": str(dirs["data"]),
           "PYTHONDONTWRITEBYTECODE": "1"}   # bytecode caches are Python's, written next to the sources
    # library caches placed by variables this process may hold (torch sets TORCHINDUCTOR_CACHE_DIR in os.environ
    # the first time anything asks for its cache): let the child derive them from its own TMPDIR and HOME
    for var in ("MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env.pop(var, None)
    result = subprocess.run([sys.executable, "-c", _DRIVER, str(ROOT), json.dumps(_RUNS)], cwd=dirs["work"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.rpartition("@@")[2])
    assert report["codes"] == [0] * len(_RUNS), result.stderr[-3000:]

    runs = dirs["work"] / "saved"
    allowed = [runs, dirs["data"], dirs["tmp"], dirs["home"] / ".cache", dirs["home"] / ".config"]
    outside = sorted({path for _, path in report["writes"] if not any(Path(path).is_relative_to(a) for a in allowed)})
    assert outside == [], "written outside the run root, the data cache and the temporary directory"
    assert any(Path(p).is_relative_to(runs) for _, p in report["writes"])   # the hook did see the runs
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["DependencyViT", "KGAT", "PointerNet"]
    # the repository is not in the allowed list: a write into it (a default path resolved against the
    # source tree instead of the working directory) would appear in `outside` above
    assert not any(Path(p).is_relative_to(ROOT) for _, p in report["writes"])
