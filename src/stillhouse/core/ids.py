"""Canonical JSON, hashes, timestamps and run ids: the identities every stage and the ledger share."""

from __future__ import annotations

import getpass
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def now() -> str:
    """The current time, UTC, ISO 8601 to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id(stage: str) -> str:
    """A sortable, unique run id naming its stage: `train-20261202T101500-3fa2c1`."""
    return f"{stage}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def operator() -> str:
    """Who ran it, as the OS names them."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_hash(root: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """One sha256 over many files (each file's path relative to `root` and its sha256, in path order),
    and each file's sha256: the identity of a dataset or a model's weights."""
    digests = {p.relative_to(root).as_posix(): file_sha256(p) for p in files}
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest(), digests
