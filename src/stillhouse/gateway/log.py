"""The request log: one row per request, in SQLite (WAL) while fresh, rolled into Parquet segments for volume.

A log is a directory: `requests.sqlite` takes new rows, and once it holds `segment_rows` of them they move
into `segments/part-*.parquet` (written to a temporary name and renamed, then deleted from SQLite in the
same step), which DuckDB or pyarrow read directly. The gateway never writes on the request path: rows are
queued and a writer thread commits them in batches, computing the hashes (and, when prompts are not kept,
the MinHash sketch the detector needs) there. `retention="hashes"` keeps sha256 of prompt and answer and
the sketch, never their text, so a log can be kept or shared for longer than users' prompts may be.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from stillhouse.core.errors import StillhouseError
from stillhouse.gateway import sketch

Retention = Literal["full", "hashes"]
DB_FILE = "requests.sqlite"
SEGMENTS = "segments"
ACCOUNTS = "accounts.jsonl"  # optional: what billing knows of each account (payment instrument...), for the detector

SCHEMA = pa.schema(
    [
        ("ts", pa.float64()),  # unix seconds when the request arrived
        ("key_id", pa.string()),  # never the key; null for a failed authentication
        ("source", pa.string()),  # client address
        ("user_agent", pa.string()),
        ("endpoint", pa.string()),  # chat, completions, models
        ("model", pa.string()),
        ("status", pa.int32()),
        ("stream", pa.bool_()),
        ("logprobs", pa.bool_()),
        ("max_tokens", pa.int32()),
        ("prompt", pa.string()),  # null under retention="hashes"
        ("answer", pa.string()),
        ("prompt_sha256", pa.string()),
        ("answer_sha256", pa.string()),
        ("sketch", pa.binary()),  # MinHash of the prompt; stored when the text is not
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("latency_ms", pa.float32()),
        ("error", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
_SQL_TYPES = {pa.float64(): "REAL", pa.float32(): "REAL", pa.int32(): "INTEGER", pa.bool_(): "INTEGER"}
_CREATE = "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, {})".format(
    ", ".join(f"{f.name} {_SQL_TYPES.get(f.type, 'BLOB' if f.type == pa.binary() else 'TEXT')}" for f in SCHEMA)
)
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def finish_rows(rows: list[dict[str, Any]], retention: Retention) -> list[dict[str, Any]]:
    """Fill the hash columns (and the sketch, dropping text, under retention="hashes") of raw rows."""
    for row in rows:
        row["prompt_sha256"] = _sha(row.get("prompt"))
        row["answer_sha256"] = _sha(row.get("answer"))
    if retention == "hashes":
        texts = [r["prompt"] for r in rows if r.get("prompt") is not None]
        blobs = iter(sketch.to_bytes(sketch.sketches(texts)))
        for row in rows:
            if row.get("prompt") is not None:
                row["sketch"] = next(blobs)
            row["prompt"] = row["answer"] = None
    return rows


def write_segment(directory: Path, table: pa.Table) -> Path:
    """Write one Parquet segment under a temporary name and rename it, so a reader never sees half a file."""
    out = directory / SEGMENTS
    out.mkdir(exist_ok=True)
    name = f"part-{time.time_ns():020d}.parquet"
    tmp = out / f".{name}.tmp"
    pq.write_table(table.cast(SCHEMA), tmp, compression="zstd")
    os.replace(tmp, out / name)
    return out / name


class RequestLog:
    """Append rows from the event loop; a writer thread commits them every `flush_s` and rolls segments."""

    def __init__(
        self,
        directory: str | Path,
        *,
        retention: Retention = "full",
        segment_rows: int = 100_000,
        flush_s: float = 0.2,
    ):
        if retention not in ("full", "hashes"):
            raise StillhouseError(f"retention must be 'full' or 'hashes', not {retention!r}")
        if segment_rows < 1:
            raise StillhouseError("segment_rows must be at least 1")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StillhouseError(f"cannot create the log directory {self.directory}: {e.strerror}") from None
        self.retention, self.segment_rows, self.flush_s = retention, segment_rows, flush_s
        self.db = sqlite3.connect(self.directory / DB_FILE, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_CREATE)
        self.db.commit()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one flush at a time (the thread's and close()'s)
        self._thread = threading.Thread(target=self._run, name="stillhouse-gateway-log", daemon=True)
        self._thread.start()

    def append(self, row: dict[str, Any]) -> None:
        """Queue a row (list.append is atomic under the GIL; the writer swaps the list out)."""
        self._pending.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> int:
        """Commit every queued row; roll a segment when SQLite holds enough. Returns rows committed."""
        with self._lock:
            rows, self._pending = self._pending, []
            if rows:
                finish_rows(rows, self.retention)
                self.db.executemany(_INSERT, [tuple(r.get(c) for c in COLUMNS) for r in rows])
                self.db.commit()
            held = self.db.execute("SELECT count(*) FROM requests").fetchone()[0] if rows else 0
            if held >= self.segment_rows:
                self._roll()
            return len(rows)

    def _roll(self) -> None:
        last = self.db.execute("SELECT max(id) FROM requests").fetchone()[0]
        write_segment(self.directory, sqlite_table(self.db, last))
        self.db.execute("DELETE FROM requests WHERE id <= ?", (last,))
        self.db.commit()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()
        self.db.close()

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sqlite_table(db: sqlite3.Connection, last: int | None = None) -> pa.Table:
    """The rows held in SQLite (up to id `last`) as an Arrow table in the log's schema."""
    where = "" if last is None else f" WHERE id <= {int(last)}"
    cursor = db.execute(f"SELECT {', '.join(COLUMNS)} FROM requests{where} ORDER BY id")
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    for row in cursor:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    for i, f in enumerate(SCHEMA):
        if f.type == pa.bool_():  # SQLite keeps booleans as 0/1
            columns[i] = [None if v is None else bool(v) for v in columns[i]]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def log_files(path: str | Path) -> tuple[list[Path], Path | None]:
    """The Parquet segments and the SQLite file of a log directory (or a single file of either kind)."""
    path = Path(path)
    if not path.exists():
        raise StillhouseError(f"no log at {path}; pass a gateway or simulator log directory")
    if path.is_file():
        if path.suffix == ".parquet":
            return [path], None
        if path.suffix in (".sqlite", ".db"):
            return [], path
        raise StillhouseError(f"{path} is not a log: pass a log directory, a .parquet segment or requests.sqlite")
    segments = sorted((path / SEGMENTS).glob("part-*.parquet")) if (path / SEGMENTS).is_dir() else []
    db = path / DB_FILE
    if not segments and not db.exists():
        raise StillhouseError(f"{path} holds no request log ({DB_FILE} or {SEGMENTS}/part-*.parquet)")
    return segments, db if db.exists() else None


def read_log(path: str | Path, columns: Iterable[str] | None = None) -> pa.Table:
    """Every row of a log, segments then SQLite, as one Arrow table."""
    segments, db = log_files(path)
    wanted = list(columns) if columns is not None else COLUMNS
    tables = [pq.read_table(p, columns=wanted) for p in segments]
    if db is not None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables.append(sqlite_table(conn).select(wanted))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table().select(wanted)
