"""Writing outputs without ever losing data: check the path before any work, write beside it, rename at the end.

Every command that writes a file goes through `check_output` first (so a bad path fails in one line
before anything expensive runs, and an input is never the output) and `atomic_write` (so a failure
leaves the old file, or nothing, never half of a new one).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from stillhouse.core.errors import StillhouseError

# SQLite keeps a database's recent writes beside it: replacing any of them loses data too.
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def check_output(path: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """The output file `path`, once it is known it can be written without harming anything.

    Refuses: a directory; an existing file without `overwrite`; any input (or an SQLite side file of
    one, or a file inside an input directory), even with `overwrite`; a folder that cannot be created.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise StillhouseError("the output path is empty; pass a file name")
    if path.is_dir():
        raise StillhouseError(f"{path} is a directory; pass a file path to write")
    resolved = path.resolve()
    for i in inputs:
        src = Path(i).resolve()
        if any(resolved == Path(f"{src}{s}") for s in _SIDE_FILES) or (src.is_dir() and resolved.is_relative_to(src)):
            raise StillhouseError(f"{path} is (or is inside) the input {i}: writing it would destroy it")
    if path.exists() and not overwrite:
        raise StillhouseError(f"{path} exists; pass --overwrite to replace it, or choose another path")
    check_writable(path)
    return path


def check_writable(path: Path, flag: str = "-o") -> None:
    """Refuse, before any work, a path whose nearest existing folder cannot take new files (read-only,
    /proc, not a folder), by making and removing a scratch folder there: permission bits alone can lie."""
    start = path.resolve()
    folder = next(p for p in (start, *start.parents) if p.exists() and (p.is_dir() or p != start))
    if not folder.is_dir():
        raise StillhouseError(f"{flag} {path}: cannot write it, {folder} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".stillhouse-check-", dir=folder))
    except OSError as e:
        raise StillhouseError(
            f"{flag} {path}: cannot write it, {folder} takes no new files ({e.strerror or e})"
        ) from None


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise StillhouseError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
