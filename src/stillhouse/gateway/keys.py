"""API keys for the gateway, stored hashed in SQLite.

A key is 32 random bytes, so a plain sha256 is as good as a slow password hash here and lets the gateway
look one up in a dict per request. Only the hash and an 8-character prefix (to tell keys apart in a list)
are kept; the key itself is shown once, when it is created. Revocation in another process (the CLI) is
seen by a running gateway through SQLite's `data_version`, which changes on every commit by anyone else.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from stillhouse.core.errors import StillhouseError

PREFIX = "shk-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    shown TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    created REAL NOT NULL,
    revoked REAL
);
"""


@dataclass(frozen=True)
class Key:
    """What the gateway knows of a key: its id (logged in place of the key), name and limits."""

    id: str
    name: str
    shown: str
    rpm: int | None
    tpm: int | None
    created: float
    revoked: float | None = None


RELOAD_S = 0.1  # how stale a running gateway's view of the keys file may be


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The keys file: create, list, revoke, and look up a presented key by its hash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StillhouseError(f"no directory {self.path.parent} for the keys file; create it or pick --keys")
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._version, self._checked = -1, 0.0
        self._by_hash: dict[str, Key] = {}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, name: str, *, rpm: int | None = None, tpm: int | None = None) -> tuple[Key, str]:
        """A new key and its secret (shown once; only its hash is stored)."""
        if not name.strip():
            raise StillhouseError("a key needs a non-empty NAME")
        for flag, value in (("--rpm", rpm), ("--tpm", tpm)):
            if value is not None and value < 1:
                raise StillhouseError(f"{flag} must be at least 1 (or left out for no limit)")
        secret = PREFIX + secrets.token_urlsafe(32)
        key = Key("key_" + secrets.token_hex(6), name, secret[:12], rpm, tpm, time.time())
        self.db.execute(
            "INSERT INTO keys (id, name, hash, shown, rpm, tpm, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.name, key_hash(secret), key.shown, rpm, tpm, key.created),
        )
        self._version = -1  # our own commits do not change data_version
        return key, secret

    def list(self) -> list[Key]:
        rows = self.db.execute("SELECT id, name, shown, rpm, tpm, created, revoked FROM keys ORDER BY created")
        return [Key(*row) for row in rows]

    def revoke(self, ident: str) -> Key:
        """Revoke by id or by name (a name must be unambiguous among live keys)."""
        live = [k for k in self.list() if k.revoked is None and ident in (k.id, k.name)]
        if not live:
            raise StillhouseError(f"no live key with id or name {ident!r}; `stillhouse keys list` shows them")
        if len(live) > 1:
            raise StillhouseError(f"{len(live)} live keys are named {ident!r}; revoke one by its id")
        self.db.execute("UPDATE keys SET revoked = ? WHERE id = ?", (time.time(), live[0].id))
        self._version = -1
        return live[0]

    def lookup(self, secret: str) -> Key | None:
        """The live key this secret belongs to, or None. Another process's change (a revocation) is seen within
        RELOAD_S: asking SQLite on every request would cost more than the rest of the lookup."""
        now = time.monotonic()
        if self._version == -1 or now - self._checked > RELOAD_S:
            self._checked = now
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
        else:
            version = self._version
        if version != self._version:
            self._version = version
            rows = self.db.execute("SELECT hash, id, name, shown, rpm, tpm, created FROM keys WHERE revoked IS NULL")
            self._by_hash = {row[0]: Key(*row[1:]) for row in rows}
        return self._by_hash.get(key_hash(secret))
