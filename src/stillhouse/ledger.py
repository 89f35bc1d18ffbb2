"""The provenance ledger: an append-only, hash-chained record of every run.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting or
reordering any entry breaks the chain at a point `verify` can name. One SQLite file can hold many
runs (and every stage: collect, curate, train, eval), so a whole lineage answers from one place.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stillhouse.errors import StillhouseError

GENESIS = "0" * 64
LEDGER_FILE = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    at        TEXT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_run ON entries(run_id);
"""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id(stage: str) -> str:
    return f"{stage}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def entry_hash(seq: int, run_id: str, kind: str, at: str, body: str, prev_hash: str) -> str:
    payload = canonical_json([seq, run_id, kind, at, body, prev_hash])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    seq: int
    run_id: str
    kind: str
    at: str
    body: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Problem:
    """One break in the chain, named so a person can find the entry."""

    seq: int
    run_id: str
    kind: str
    what: str

    def __str__(self) -> str:
        return f"entry #{self.seq} ({self.kind}, run {self.run_id}): {self.what}"


class Ledger:
    """An append-only provenance ledger in one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StillhouseError(f"cannot open ledger {self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")  # serialises appenders across processes
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def append(self, run_id: str, kind: str, body: dict[str, Any]) -> Entry:
        """Add an entry at the end of the chain."""
        text = canonical_json(body)
        at = now()
        try:
            with self._write() as db:
                row = db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                h = entry_hash(seq, run_id, kind, at, text, prev)
                db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", (seq, run_id, kind, at, text, prev, h))
        except sqlite3.OperationalError as e:
            raise StillhouseError(f"cannot write ledger {self.path}: {e}") from e
        return Entry(seq, run_id, kind, at, json.loads(text), prev, h)

    def entries(self, run_id: str | None = None) -> list[Entry]:
        sql, args = "SELECT * FROM entries", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [Entry(r[0], r[1], r[2], r[3], _loads(r[4]), r[5], r[6]) for r in rows]

    def verify(self) -> list[Problem]:
        """Every break in the chain: edited, deleted or reordered entries. Empty means intact."""
        problems: list[Problem] = []
        prev_hash, prev_seq = GENESIS, 0
        rows = self._db.execute("SELECT seq, run_id, kind, at, body, prev_hash, hash FROM entries ORDER BY seq")
        for seq, run_id, kind, at, body, stored_prev, stored_hash in rows:
            if seq != prev_seq + 1:
                missing = f"#{prev_seq + 1}" if seq == prev_seq + 2 else f"#{prev_seq + 1}..#{seq - 1}"
                problems.append(Problem(seq, run_id, kind, f"entries {missing} before it were deleted"))
            elif stored_prev != prev_hash:
                problems.append(
                    Problem(seq, run_id, kind, "does not follow the entry before it (deleted or reordered)")
                )
            if entry_hash(seq, run_id, kind, at, body, stored_prev) != stored_hash:
                problems.append(Problem(seq, run_id, kind, "its content was edited after it was written"))
            prev_hash, prev_seq = stored_hash, seq
        return problems

    def runs(self) -> list[dict[str, Any]]:
        """One summary per run: its start entry's facts merged with its end entry's totals."""
        summary: dict[str, dict[str, Any]] = {}
        for e in self.entries():
            s = summary.setdefault(e.run_id, {"run_id": e.run_id, "stage": e.kind.split(".")[0], "started": e.at})
            if e.kind.endswith(".end"):
                s["ended"] = e.at
            s.update({k: v for k, v in e.body.items() if k != "config"})
        return list(summary.values())

    def export(self) -> dict[str, Any]:
        """Everything, as JSON-ready data for a model card or an audit."""
        problems = self.verify()
        return {
            "ledger": str(self.path),
            "intact": not problems,
            "problems": [str(p) for p in problems],
            "runs": self.runs(),
            "entries": [e.__dict__ for e in self.entries()],
        }


def _loads(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text}


def ledger_path(run_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """Where a run records provenance: an explicit (shared) ledger file, else the run directory's own."""
    return Path(explicit) if explicit else Path(run_dir) / LEDGER_FILE
