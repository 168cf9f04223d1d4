"""Load on the recommendation server (``run.py serve``) against the in-process ceiling, on one machine.

    python bench/serve_load.py [--run saved/<run folder>] [--requests 20000] [--clients 16] [--batch 64] [--k 20]
                               [--index Flat] [--rounds 3] [--seed 0] [--out DIR] [--publish]

Without ``--run`` it first trains KGAT on ml-100k for ``--train-epochs`` (default 1) epochs through ``run.py``
into ``<out>/saved/`` (serving costs do not depend on how well the model is trained). Then it starts
``run.py serve`` on 127.0.0.1 (a free port, ``--threads 1``) and, in ``--rounds`` interleaved rounds over the
same seeded users (drawn with replacement),

- ``in-process``: ``Recommender.recommend([user], k)`` one call per request, in this process (the ceiling);
- ``http``: ``GET /recommend?user=..&k=..`` from ``--clients`` concurrent keep-alive connections (a minimal
  asyncio HTTP/1.1 client, so that the client costs little of the shared CPU);
- ``in-process batch`` / ``http batch``: the same users ``--batch`` at a time (``POST /recommend``).

It prints requests/s (users/s for the batched rows), p50/p95/p99 latency and the error count (any non-200
answer, a broken connection, or an answer whose items differ from the in-process ones) side by side, and
the ratio of HTTP to in-process seconds per request (median over the rounds, min-max range). The server is
stopped at the end, whatever happens. Writes ``serve_load.json`` (and the server's output, ``server.log``) to
``results/serve_load/`` (``--out``; ``--publish`` also copies the JSON to ``docs/results/serve_load/``).
Target (issue #23): 0 errors, single-user HTTP within 3x of the in-process ceiling per request on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.timing import ratio, summary  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402

SCRIPT = "serve_load"


# ---------------------------------------------------------------------------------------------- set-up

def train_run(out: Path, epochs: int, seed: int) -> Path:
    """KGAT on ml-100k through run.py into ``out/saved``; returns the run folder."""
    cmd = [sys.executable, "run.py", "--model", "KGAT", "--dataset", "ml-100k", f"--epochs={epochs}",
           "--num_threads=1", "--show_progress=False", f"--seed={seed}", f"--checkpoint_dir={out / 'saved'}"]
    print("training:", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return Path(done.stdout.strip().splitlines()[-1].split("Run folder: ", 1)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, index: str, log: Path) -> subprocess.Popen:
    """``run.py serve`` in a subprocess, its output in ``log`` (a file: a pipe nobody drains could block it)."""
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "run.py", "serve", "--run", str(run), "--port", str(port),
                                 "--index", index, "--threads", "1"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"run.py serve exited with {proc.returncode}: {log.read_text().strip()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("run.py serve did not answer /health within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------- the client

async def _client(port: int, requests: list[tuple[bytes, list[list[str]]]], latencies: list[float],
                  errors: list[str], timeout: float) -> None:
    """Send ``requests`` one after another on one keep-alive connection; check each answer's items."""
    reader = writer = None
    for raw, want in requests:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.perf_counter()
            writer.write(raw)
            status, body = await asyncio.wait_for(_read_response(reader), timeout)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"status {status}: {body[:200]!r}")
                continue
            answer = json.loads(body)
            got = [answer["items"]] if "items" in answer else [row["items"] for row in answer["results"]]
            if got != want:
                errors.append(f"items differ from the in-process answer for {raw[:80]!r}")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def http_pass(port: int, requests: list[tuple[bytes, list[list[str]]]], clients: int,
              timeout: float = 30.0) -> tuple[float, list[float], list[str]]:
    """``(wall seconds, latencies, errors)`` of the requests spread round-robin over ``clients`` connections."""
    latencies: list[float] = []
    errors: list[str] = []

    async def go() -> None:
        await asyncio.gather(*(_client(port, requests[c::clients], latencies, errors, timeout)
                               for c in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t0, latencies, errors


def get_request(user: str, k: int) -> bytes:
    return f"GET /recommend?user={user}&k={k} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post_request(users: list[str], k: int) -> bytes:
    body = json.dumps({"users": users, "k": k}).encode()
    return (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# ---------------------------------------------------------------------------------------------- measuring

def in_process_pass(rec, batches: list[list[str]], k: int) -> tuple[float, list[float], list[list[list[str]]]]:
    """``(wall seconds, per-call latencies, items per call)`` of ``rec.recommend(batch, k)`` for each batch."""
    latencies, answers = [], []
    t0 = time.perf_counter()
    for users in batches:
        t = time.perf_counter()
        items, _ = rec.recommend(users, k)
        latencies.append(time.perf_counter() - t)
        answers.append([row[row != ""].tolist() for row in items])
    return time.perf_counter() - t0, latencies, answers


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)} if len(ms) else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run folder to serve (default: train KGAT on ml-100k first)")
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs of that training (default 1)")
    parser.add_argument("--requests", type=int, default=20_000, help="single-user requests in all (default 20000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--batch", type=int, default=64, help="users per POST in the batched variant (default 64)")
    parser.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    parser.add_argument("--index", default="Flat", help="faiss index of the server and the ceiling (default Flat)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the requests are split into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    add_output_args(parser, SCRIPT)
    args = parser.parse_args(argv)
    if args.requests < args.rounds * args.clients or args.batch < 1 or args.rounds < 1:
        parser.error(f"--requests must be >= rounds x clients ({args.rounds * args.clients}); --batch, --rounds >= 1")
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    run = args.run if args.run is not None else train_run(out.path("saved").parent, args.train_epochs, args.seed)

    from recsys.export import Recommender

    rec = Recommender.from_run(run, index=args.index)
    rng = np.random.default_rng(args.seed)
    users = rec.data.user_raw(rng.integers(0, rec.data.n_users, args.requests)).tolist()
    per_round = args.requests // args.rounds
    port = free_port()
    print(f"serving {run} on 127.0.0.1:{port} ({rec.config['model']} on {rec.config['dataset']}, "
          f"{rec.data.n_users} users, {rec.data.n_items} items, index {args.index})", flush=True)
    proc = start_server(run, port, args.index, out.path("server.log"))
    rows = {name: {"seconds": [], "latencies": [], "errors": [], "n": 0, "users": 0}
            for name in ("in-process", "http", "in-process batch", "http batch")}
    try:
        for r in tqdm(range(args.rounds), desc="rounds"):
            mine = users[r * per_round:(r + 1) * per_round]
            singles = [[u] for u in mine]
            batches = [mine[i:i + args.batch] for i in range(0, len(mine), args.batch)]
            for name, groups in (("", singles), (" batch", batches)):
                wall, lat, answers = in_process_pass(rec, groups, args.k)
                _add(rows[f"in-process{name}"], wall, lat, [], len(groups), len(mine))
                reqs = [(get_request(g[0], args.k) if name == "" else post_request(g, args.k), a)
                        for g, a in zip(groups, answers)]
                wall, lat, errors = http_pass(port, reqs, args.clients)
                _add(rows[f"http{name}"], wall, lat, errors, len(groups), len(mine))
    finally:
        stop_server(proc)

    table = {}
    for name, row in rows.items():
        per_request = summary([s / (row["n"] / args.rounds) for s in row["seconds"]])
        table[name] = {"requests": row["n"], "users": row["users"], "requests_per_s": row["n"] / sum(row["seconds"]),
                       "users_per_s": row["users"] / sum(row["seconds"]), **percentiles(row["latencies"]),
                       "errors": len(row["errors"]), "first_errors": row["errors"][:5],
                       "seconds_per_request": per_request}
    single = ratio(table["http"]["seconds_per_request"], table["in-process"]["seconds_per_request"])
    batch = ratio(table["http batch"]["seconds_per_request"], table["in-process batch"]["seconds_per_request"])
    checks = {"zero_errors": all(t["errors"] == 0 for t in table.values()),
              "single_user_http_within_3x": single["median"] <= 3.0}
    print(f"\n{'path':<18} {'requests':>8} {'req/s':>8} {'users/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}")
    for name, t in table.items():
        print(f"{name:<18} {t['requests']:>8} {t['requests_per_s']:>8.0f} {t['users_per_s']:>8.0f} "
              f"{t['p50_ms']:>8.3f} {t['p95_ms']:>8.3f} {t['p99_ms']:>8.3f} {t['errors']:>6}")
    print(f"\nHTTP / in-process seconds per request, median over {args.rounds} rounds (range): "
          f"single user {single['median']:.2f}x ({single['low']:.2f}-{single['high']:.2f}), "
          f"batch of {args.batch} {batch['median']:.2f}x ({batch['low']:.2f}-{batch['high']:.2f})")
    print(f"check: 0 errors {'PASS' if checks['zero_errors'] else 'FAIL'}; single-user HTTP within 3x of "
          f"in-process {'PASS' if checks['single_user_http_within_3x'] else 'FAIL'}")
    out.write_json(f"{SCRIPT}.json", {
        "run_folder": str(run), "model": rec.config["model"], "dataset": rec.config["dataset"],
        "n_users": rec.data.n_users, "n_items": rec.data.n_items, "index": args.index, "k": args.k,
        "requests": args.requests, "clients": args.clients, "batch": args.batch, "rounds": args.rounds,
        "server_threads": 1, "table": table, "ratio_single": single, "ratio_batch": batch, "checks": checks,
    }, seeds=[args.seed])
    return 0


def _add(row: dict, wall: float, latencies: list[float], errors: list[str], n: int, users: int) -> None:
    row["seconds"].append(wall)
    row["latencies"].extend(latencies)
    row["errors"].extend(errors)
    row["n"] += n
    row["users"] += users


if __name__ == "__main__":
    sys.exit(main())
