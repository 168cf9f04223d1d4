"""The interaction log: one append-only JSONL file per session, the unit of the study analysis.

Each line is one event with ``"event"`` in ``start | click | decision`` and a UTC ``"time"``:

* ``start``: ``session``, ``mode`` (``"interactive"`` or ``"static"``).
* ``click``: ``query``, ``cell`` (0..48, row-major on the 7 x 7 grid; ``null`` for a reset), ``selected`` (the
  cell's new state), ``mask`` (49 ints), ``prediction`` (label) and ``exemplars`` (training indices, best first).
* ``decision``: ``query``, ``ai_label`` (the prediction being judged), ``true_label``, ``accept`` (bool).

A session is CHM-Corr++ when its file has at least one ``click`` (the released analysis treats any session with an
interactions log as CHM-Corr++). Lines are appended and flushed one at a time, so a crash loses at most the line
being written; :func:`read_log` names the file and line of anything it cannot parse.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

__all__ = ["SessionLog", "read_log", "EVENTS"]

EVENTS = ("start", "click", "decision")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_lock = threading.Lock()


class SessionLog:
    """Appends events to ``<folder>/<session>.jsonl``. Session names: letters, digits, ``_`` and ``-``."""

    def __init__(self, folder: str | os.PathLike, session: str, fsync: bool = True):
        if not _NAME.match(session):
            raise ValueError(f"session name {session!r} must be 1-64 letters, digits, '_' or '-'")
        self.path = Path(folder) / f"{session}.jsonl"
        self.session, self.fsync = session, fsync

    def append(self, event: str, **fields: Any) -> dict:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
        record = {"event": event, "session": self.session,
                  "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"), **fields}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            if self.fsync:                  # the web app syncs every click; simulations may skip it
                os.fsync(fh.fileno())
        return record


def read_log(path: str | os.PathLike) -> list[dict]:
    """The events of one session file, in order; a clear error naming ``file:line`` for a bad line."""
    path = Path(path)
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
        if not isinstance(record, dict) or record.get("event") not in EVENTS:
            raise ValueError(f"{path}:{n}: expected an object with 'event' in {EVENTS}, got {line[:80]!r}")
        if record["event"] == "decision":
            for key in ("query", "ai_label", "true_label", "accept"):
                if key not in record:
                    raise ValueError(f"{path}:{n}: decision without {key!r}")
        events.append(record)
    return events
