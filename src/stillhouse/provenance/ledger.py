"""The provenance ledger: an append-only, hash-chained record of every run, in one SQLite file.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting or
reordering an entry breaks the chain at a point `verify` can name. A chain cannot see its own tail
being cut off, so every artifact (dataset card, model card, evidence file) records the ledger head it
was made at (an `Anchor`), and `verify(anchors)` names a truncation against any of them. With a
signing key (Ed25519, kept outside the ledger) every entry is also signed, so a chain rewritten from
scratch fails against the public key.

Every stage writes through `stage_run`: one `<stage>.start` entry, one `<stage>.end` entry whose
`ok` (bool) and `error` (str or None) have the same types whether the run succeeded or failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json, new_run_id, now, operator
from stillhouse.core.outputs import check_writable

GENESIS = "0" * 64
LEDGER_FILE = "ledger.sqlite"
KEY_ENV = "STILLHOUSE_LEDGER_KEY"  # path of an Ed25519 private key: every entry appended is signed with it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    at        TEXT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    signature TEXT
);
CREATE INDEX IF NOT EXISTS entries_run ON entries(run_id);
"""
_COLUMNS = "seq, run_id, kind, at, body, prev_hash, hash, signature"


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
    signature: str | None = None


@dataclass(frozen=True)
class Anchor:
    """The ledger head an artifact was made at: the chain must still hold this entry, unchanged."""

    seq: int
    hash: str
    ledger: str = ""  # the ledger's path as the artifact recorded it
    source: str = ""  # which artifact recorded it, for messages

    def to_json(self) -> dict[str, Any]:
        return {"ledger": self.ledger, "seq": self.seq, "hash": self.hash}

    @classmethod
    def from_json(cls, data: Any, source: str) -> Anchor | None:
        if isinstance(data, dict) and isinstance(data.get("seq"), int) and isinstance(data.get("hash"), str):
            return cls(data["seq"], data["hash"], str(data.get("ledger", "")), source)
        return None


@dataclass(frozen=True)
class Problem:
    """One break in the chain, named so a person can find the entry."""

    seq: int
    run_id: str
    kind: str
    what: str

    def __str__(self) -> str:
        if not self.run_id:
            return f"entry #{self.seq}: {self.what}"
        return f"entry #{self.seq} ({self.kind}, run {self.run_id}): {self.what}"


class Signer:
    """Signs entry hashes with an Ed25519 private key; `verifier` checks them with the public key."""

    def __init__(self, private_pem: bytes):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(private_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise StillhouseError("the ledger signing key is not Ed25519; make one with `stillhouse ledger keygen`")
        self._key = key

    @classmethod
    def from_env(cls) -> Signer | None:
        path = os.environ.get(KEY_ENV)
        if not path:
            return None
        try:
            return cls(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise StillhouseError(f"${KEY_ENV}={path}: cannot read an Ed25519 private key there ({e})") from None

    def sign(self, entry_hash_hex: str) -> str:
        return self._key.sign(bytes.fromhex(entry_hash_hex)).hex()


def keygen(path: Path) -> Path:
    """Write a new Ed25519 private key to `path` (mode 0600) and its public key beside it; returns the latter."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = path.with_name(path.name + ".pub")
    for p in (path, public):
        if p.exists():
            raise StillhouseError(f"{p} exists; keys are never overwritten, choose another path")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    except OSError as e:
        raise StillhouseError(f"cannot write the key to {path}: {e.strerror or e}") from None
    return public


def _verifier(public_pem: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(public_pem)
    except ValueError as e:
        raise StillhouseError(f"not a PEM public key ({e}); pass the .pub that `ledger keygen` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StillhouseError("the public key is not an Ed25519 key")
    return key


class Ledger:
    """An append-only provenance ledger in one SQLite file.

    `readonly=True` (show, verify, export, provenance) never creates or changes the file: a missing,
    empty or foreign file is an error, not an empty ledger.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, signer: Signer | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self._signer = signer if signer is not None or readonly else Signer.from_env()
        if self.path.is_dir():
            raise StillhouseError(f"{self.path} is a directory; a ledger is a file (e.g. {self.path / LEDGER_FILE})")
        exists = self.path.exists()
        if readonly and not exists:
            raise StillhouseError(f"no ledger at {self.path}; pass the ledger file or a run directory that has one")
        if exists and self.path.stat().st_size == 0:
            raise StillhouseError(
                f"{self.path} is empty (0 bytes): not a ledger, or one that was truncated; "
                "restore it from a copy (delete it only to start a new chain)"
            )
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except (sqlite3.DatabaseError, OSError) as e:
            what = "not a stillhouse ledger (not an SQLite file)" if exists else f"cannot create it: {e}"
            raise StillhouseError(f"{self.path}: {what}") from None
        if exists and "entries" not in tables:
            self._db.close()
            raise StillhouseError(
                f"{self.path} has no ledger entries table: not a stillhouse ledger, or its chain was removed"
            )
        if not readonly:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(entries)")}
                if "signature" not in columns:  # a ledger written before entries could be signed
                    self._db.execute("ALTER TABLE entries ADD COLUMN signature TEXT")
            except sqlite3.DatabaseError as e:
                raise StillhouseError(f"cannot open ledger {self.path}: {e}") from None
        self._columns = {r[1] for r in self._db.execute("PRAGMA table_info(entries)")}

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
        """Add an entry at the end of the chain (signed when a signing key is set)."""
        if self.readonly:
            raise StillhouseError(f"{self.path} was opened read-only")
        text = canonical_json(body)
        at = now()
        try:
            with self._write() as db:
                row = db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                h = entry_hash(seq, run_id, kind, at, text, prev)
                sig = self._signer.sign(h) if self._signer else None
                db.execute(
                    f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, run_id, kind, at, text, prev, h, sig),
                )
        except sqlite3.DatabaseError as e:
            raise StillhouseError(f"cannot write ledger {self.path}: {e}") from None
        return Entry(seq, run_id, kind, at, json.loads(text), prev, h, sig)

    def head(self) -> Anchor:
        """The last entry, as an anchor for the artifact being made now (seq 0 for an empty chain)."""
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        seq, h = row if row else (0, GENESIS)
        return Anchor(seq, h, str(self.path.resolve()))

    def _rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        columns = _COLUMNS if "signature" in self._columns else _COLUMNS.replace(", signature", ", NULL")
        try:
            return self._db.execute(f"SELECT {columns} FROM entries {where} ORDER BY seq", args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StillhouseError(f"cannot read ledger {self.path}: {e}") from None

    def entries(self, run_id: str | None = None) -> list[Entry]:
        rows = self._rows("WHERE run_id = ?", (run_id,)) if run_id is not None else self._rows()
        return [Entry(r[0], r[1], r[2], r[3], _loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def verify(self, anchors: Sequence[Anchor] = (), public_key: bytes | None = None) -> list[Problem]:
        """Every break: edited, deleted or reordered entries; a tail cut below an artifact's anchor; with
        `public_key`, every entry unsigned or signed by another key. Empty means intact."""
        problems: list[Problem] = []
        verifier = _verifier(public_key) if public_key is not None else None
        prev_hash, prev_seq = GENESIS, 0
        by_seq: dict[int, str] = {}
        for seq, run_id, kind, at, body, stored_prev, stored_hash, sig in self._rows():
            if seq != prev_seq + 1:
                missing = f"#{prev_seq + 1}" if seq == prev_seq + 2 else f"#{prev_seq + 1}..#{seq - 1}"
                problems.append(Problem(seq, run_id, kind, f"entries {missing} before it were deleted"))
            elif stored_prev != prev_hash:
                what = "does not follow the entry before it (deleted or reordered)"
                problems.append(Problem(seq, run_id, kind, what))
            if entry_hash(seq, run_id, kind, at, body, stored_prev) != stored_hash:
                problems.append(Problem(seq, run_id, kind, "its content was edited after it was written"))
            if verifier is not None:
                problems.extend(_signature_problem(verifier, seq, run_id, kind, stored_hash, sig))
            by_seq[seq] = stored_hash
            prev_hash, prev_seq = stored_hash, seq
        for a in anchors:
            if a.seq == 0:
                continue
            if a.seq not in by_seq:
                what = f"missing: {a.source or 'an artifact'} was made at this entry; the ledger ends at #{prev_seq}"
                problems.append(Problem(a.seq, "", "", what + " (its tail was deleted)"))
            elif by_seq[a.seq] != a.hash:
                what = f"differs from the entry {a.source or 'an artifact'} was made at (the chain was rewritten)"
                problems.append(Problem(a.seq, "", "", what))
        return problems

    def runs(self) -> list[dict[str, Any]]:
        """One summary per run: its start entry's facts merged with its end entry's."""
        summary: dict[str, dict[str, Any]] = {}
        for e in self.entries():
            s = summary.setdefault(e.run_id, {"run_id": e.run_id, "stage": e.kind.split(".")[0], "started": e.at})
            if e.kind.endswith(".end"):
                s["ended"] = e.at
            s.update({k: v for k, v in e.body.items() if k != "config"})
        return list(summary.values())

    def export(self, anchors: Sequence[Anchor] = ()) -> dict[str, Any]:
        """Everything, as JSON-ready data for a model card or an audit."""
        problems = self.verify(anchors)
        return {
            "ledger": str(self.path),
            "intact": not problems,
            "problems": [str(p) for p in problems],
            "runs": self.runs(),
            "entries": [e.__dict__ for e in self.entries()],
        }


def _signature_problem(verifier: Any, seq: int, run_id: str, kind: str, h: str, sig: str | None) -> list[Problem]:
    from cryptography.exceptions import InvalidSignature

    if not sig:
        return [Problem(seq, run_id, kind, "is not signed")]
    try:
        verifier.verify(bytes.fromhex(sig), bytes.fromhex(h))
    except (InvalidSignature, ValueError):
        return [Problem(seq, run_id, kind, "its signature does not match the public key (the chain was rewritten)")]
    return []


def _loads(text: str) -> dict[str, Any]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text}
    return loaded if isinstance(loaded, dict) else {"unreadable": text}


def ledger_path(run_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """Where a run records provenance: an explicit (shared) ledger file, else the run directory's own."""
    return Path(explicit) if explicit else Path(run_dir) / LEDGER_FILE


def check_ledger_path(path: Path) -> Path:
    """`path`, once it is known a ledger can be appended there; checked before a run creates anything."""
    if path.is_dir():
        raise StillhouseError(f"--ledger {path} is a directory; pass a file (e.g. {path / LEDGER_FILE})")
    if path.exists():
        Ledger(path, readonly=True).close()  # refuses an empty or foreign file in one line
        return path
    check_writable(path, flag="--ledger")
    return path


def describe_error(e: BaseException) -> str:
    """An exception as the one line a ledger end entry keeps."""
    return str(e) or type(e).__name__


@dataclass
class StageRun:
    """A run being recorded: fill `end` with the facts of its end entry."""

    ledger: Ledger
    stage: str
    run_id: str
    end: dict[str, Any] = field(default_factory=dict)


@contextmanager
def stage_run(ledger: Ledger, stage: str, start: dict[str, Any], run_id: str | None = None) -> Iterator[StageRun]:
    """Record one run of `stage`: `<stage>.start` now (with the operator), `<stage>.end` on leaving.

    The end entry always has `ok` (bool) and `error` (str or None) beside what the caller put in
    `run.end`, so a failed run has the same shape as a finished one.
    """
    run = StageRun(ledger, stage, run_id or new_run_id(stage))
    ledger.append(run.run_id, f"{stage}.start", {"operator": operator(), **start})
    try:
        yield run
    except BaseException as e:
        ledger.append(run.run_id, f"{stage}.end", {**run.end, "ok": False, "error": describe_error(e)})
        raise
    ledger.append(run.run_id, f"{stage}.end", {**run.end, "ok": True, "error": None})
