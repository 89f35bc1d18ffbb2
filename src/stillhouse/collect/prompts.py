"""Prompt files, streamed: JSONL (optionally .gz), Parquet, or a saved Hugging Face dataset.

A record is `{"id"?, "messages": [...]}` or `{"id"?, "prompt": "..."}`; its other fields (skill,
expected answer...) travel along as `meta`. Nothing here holds more than one batch of records, so
10M prompts cost the memory of a thousand.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stillhouse.core.errors import StillhouseError

_BATCH = 1024
_RESERVED = ("id", "messages", "prompt")


@dataclass(frozen=True)
class Prompt:
    """One prompt record: its id, its chat messages and the record's other fields."""

    id: str
    messages: list[dict[str, Any]]
    meta: dict[str, Any]


def read_prompts(path: str | Path) -> Iterator[Prompt]:
    """Stream the records of a prompts file; raise StillhouseError naming the record on bad input."""
    for index, (where, record) in enumerate(_records(Path(path))):
        yield _parse(record, index, where)


def validate(path: str | Path) -> int:
    """Check every record in one streaming pass (before anything is sent); return how many there are."""
    return sum(1 for _ in read_prompts(path))


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location for error messages, raw record) pairs."""
    if not path.exists():
        raise StillhouseError(f"prompts file {path} does not exist")
    if path.is_dir():
        yield from _dataset_records(path)
    elif path.suffix == ".parquet":
        yield from _parquet_records(path)
    else:
        yield from _jsonl_records(path)


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    f: IO[str]
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise StillhouseError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        except UnicodeDecodeError as e:
            raise StillhouseError(f"{path}: not UTF-8 text ({e.reason}); prompts must be JSONL or Parquet") from None


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise StillhouseError(f"{path}: not a readable Parquet file ({e})") from None
    n = 0
    for batch in pf.iter_batches(batch_size=_BATCH):
        for record in batch.to_pylist():
            yield f"{path} row {n}", record
            n += 1


def _dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise StillhouseError(f"{path} is a directory but not a saved Hugging Face dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise StillhouseError(f"{path} holds several splits ({', '.join(ds)}); pass one, e.g. {path}/{next(iter(ds))}")
    n = 0
    for batch in ds.iter(batch_size=_BATCH):  # memory-mapped Arrow, one batch at a time
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield f"{path} row {n}", dict(zip(columns, values, strict=True))
            n += 1


def _parse(record: Any, index: int, where: str) -> Prompt:
    if not isinstance(record, dict):
        raise StillhouseError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    messages, prompt = record.get("messages"), record.get("prompt")
    if messages is not None:
        _check_messages(messages, where)
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]  # columnar nulls
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        raise StillhouseError(f"{where}: needs 'messages' (a list of {{role, content}}) or 'prompt' (a string)")
    rid = record.get("id")
    meta = {k: v for k, v in record.items() if k not in _RESERVED}
    return Prompt(str(index) if rid is None else str(rid), messages, meta)


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise StillhouseError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise StillhouseError(f"{where}: messages[{i}] needs a 'role' string")
        if not isinstance(m.get("content"), str | list):
            raise StillhouseError(f"{where}: messages[{i}] needs 'content' (a string or a list of parts)")
