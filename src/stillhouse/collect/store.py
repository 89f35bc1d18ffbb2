"""The run store: every exchange with the teacher, committed to SQLite (WAL) as it arrives.

Each request is identified by an idempotency key over everything that shapes the answer (endpoint,
model, the full messages, every sampling parameter, the sample index), so re-running a command sends
only what has no committed answer, and changing a parameter makes new keys rather than a mix.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json

STORE_FILE = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    key               TEXT PRIMARY KEY,
    prompt_id         TEXT NOT NULL,
    sample            INTEGER NOT NULL,
    request           TEXT NOT NULL,
    response          TEXT,
    status            TEXT NOT NULL,
    error             TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 1,
    fingerprint       TEXT,
    run_id            TEXT NOT NULL,
    at                TEXT NOT NULL,
    meta              TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_prompt ON exchanges(prompt_id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""

# An ok answer is never overwritten: a late duplicate or a failed retry leaves it as it is.
_UPSERT = """
INSERT INTO exchanges (key, prompt_id, sample, request, response, status, error, prompt_tokens,
                       completion_tokens, cost, attempts, fingerprint, run_id, at, meta)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    response=excluded.response, status=excluded.status, error=excluded.error,
    prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens,
    cost=excluded.cost, attempts=exchanges.attempts + excluded.attempts,
    fingerprint=excluded.fingerprint, run_id=excluded.run_id, at=excluded.at
WHERE exchanges.status != 'ok'
"""


def request_key(
    base_url: str, model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any], sample: int
) -> str:
    """The idempotency key: sha256 over everything that shapes the answer."""
    return RequestKeys(base_url, model, params).key(canonical_json(list(messages)), sample)


class RequestKeys:
    """`request_key` for many requests to one endpoint, model and set of parameters.

    The key hashes canonical_json([base_url, model, messages, params, sample]); the fixed parts are
    serialised once here, so a collector pays for one serialisation of each prompt's messages, which
    its request body can reuse.
    """

    def __init__(self, base_url: str, model: str, params: dict[str, Any]):
        params = {k: v for k, v in params.items() if v is not None}
        self._head = f"[{canonical_json(base_url.rstrip('/'))},{canonical_json(model)},"
        self._tail = f",{canonical_json(params)},"

    def key(self, messages_json: str, sample: int) -> str:
        """The key of `sample` for messages serialised by canonical_json."""
        return hashlib.sha256(f"{self._head}{messages_json}{self._tail}{sample}]".encode()).hexdigest()


@dataclass
class Exchange:
    """One request and what came back for it."""

    key: str
    prompt_id: str
    sample: int
    request: dict[str, Any]
    status: str
    run_id: str
    at: str
    response: dict[str, Any] | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    attempts: int = 1
    fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # the prompt record's other fields (skill, answer...)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.request.get("messages", [])

    @property
    def choices(self) -> list[dict[str, Any]]:
        return (self.response or {}).get("choices", [])

    def texts(self) -> list[str]:
        return [(c.get("message") or {}).get("content") or c.get("text") or "" for c in self.choices]

    def row(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.prompt_id,
            self.sample,
            canonical_json(self.request),
            None if self.response is None else json.dumps(self.response, separators=(",", ":")),
            self.status,
            self.error,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost,
            self.attempts,
            self.fingerprint,
            self.run_id,
            self.at,
            json.dumps(self.meta, separators=(",", ":"), default=str) if self.meta else None,
        )


class RunStore:
    """The SQLite store of one run directory."""

    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_FILE
        if not create and not self.path.exists():
            raise StillhouseError(
                f"{self.run_dir} is not a run directory (no {STORE_FILE}); run `stillhouse collect` first"
            )
        try:
            if create:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
                self._db.executescript(_SCHEMA)
            else:  # reading a run never changes it
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                self._db.execute("SELECT key FROM exchanges LIMIT 1").fetchall()
        except (sqlite3.DatabaseError, OSError) as e:
            raise StillhouseError(f"cannot open run store {self.path}: {e} (is it a stillhouse run store?)") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put_many(self, exchanges: Iterable[Exchange]) -> None:
        """Commit a batch in one transaction: all of it is durable, or none of it."""
        self.put_rows([e.row() for e in exchanges])

    def put_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """`put_many` for rows already in `Exchange.row()` order (the collector's hot path)."""
        try:
            with self._db:
                self._db.executemany(_UPSERT, rows)
        except sqlite3.OperationalError as e:
            raise StillhouseError(f"cannot write to {self.path}: {e} (is the disk full?)") from e

    def committed(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` that already have an answer."""
        found: set[str] = set()
        for i in range(0, len(keys), 900):  # SQLite's default bound-parameter limit is 999
            chunk = keys[i : i + 900]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT key FROM exchanges WHERE status = 'ok' AND key IN ({marks})"
            found.update(r[0] for r in self._db.execute(sql, chunk))
        return found

    def exchanges(self, status: str | None = "ok", run_id: str | None = None) -> Iterator[Exchange]:
        """Stream exchanges in the order they were first stored; with `run_id`, only those that run committed."""
        where = {k: v for k, v in (("status", status), ("run_id", run_id)) if v}
        sql = "SELECT * FROM exchanges" + (" WHERE " + " AND ".join(f"{k} = ?" for k in where) if where else "")
        cur = self._db.execute(sql + " ORDER BY rowid", tuple(where.values()))
        for r in cur:
            yield Exchange(
                key=r[0],
                prompt_id=r[1],
                sample=r[2],
                request=json.loads(r[3]),
                response=json.loads(r[4]) if r[4] else None,
                status=r[5],
                error=r[6],
                prompt_tokens=r[7],
                completion_tokens=r[8],
                cost=r[9],
                attempts=r[10],
                fingerprint=r[11],
                run_id=r[12],
                at=r[13],
                meta=json.loads(r[14]) if r[14] else {},
            )

    def counts(self) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT COUNT(*), SUM(status='ok'), SUM(status!='ok'), COALESCE(SUM(prompt_tokens),0), "
            "COALESCE(SUM(completion_tokens),0), COALESCE(SUM(cost),0) FROM exchanges"
        ).fetchone()
        return {
            "exchanges": row[0],
            "ok": row[1] or 0,
            "failed": row[2] or 0,
            "prompt_tokens": row[3],
            "completion_tokens": row[4],
            "cost": round(row[5], 6),
        }

    def get_meta(self, k: str) -> Any:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, k: str, v: Any) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v)))
