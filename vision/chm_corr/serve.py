"""Serve the CHM-Corr++ page: ``python -m vision.chm_corr.serve [--port 8000] [--log-dir DIR]``.

Open ``http://HOST:PORT/?session=NAME``; every click and decision goes to ``DIR/NAME.jsonl``, and
``vision.chm_corr.analysis.analyse_folder(DIR)`` runs the study analysis over the sessions.
"""
from __future__ import annotations

import argparse

from .app import create_app


def main(argv=None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-dir", default="results/chm_corr/web_sessions", help="folder of the session logs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic birds")
    parser.add_argument("--queries", type=int, default=20, help="images per session")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.log_dir, args.seed, args.queries), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
