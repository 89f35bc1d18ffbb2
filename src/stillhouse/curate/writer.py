"""Sharded dataset output in Hugging Face chat format, named the way `datasets` discovers splits.

Shards are `data/{split}-{i:05d}-of-{n:05d}.{parquet|jsonl}`; every shard has the same columns
(`messages`, `id`, `prompt_id`, `source`, `meta` as a JSON string, so records with different extra
fields never make shards disagree on a schema).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from stillhouse.curate.example import Example
from stillhouse.curate.sources import file_sha256

Format = Literal["parquet", "jsonl"]
DATA_DIR = "data"
ROW_GROUP = 16_384  # rows buffered per Parquet row group: batch-sized groups make every reader slower
SCHEMA = pa.schema(
    [
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("id", pa.string()),
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
    ]
)


def to_table(batch: Sequence[Example]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "messages": e.chat(),
                "id": e.id,
                "prompt_id": e.prompt_id,
                "source": e.source,
                "meta": json.dumps(e.meta, ensure_ascii=False, default=str) if e.meta else "{}",
            }
            for e in batch
        ],
        schema=SCHEMA,
    )


def split_of(example: Example, validation: float, seed: int = 0) -> str:
    """Validation by a hash of the prompt, so every answer to one prompt lands in the same split."""
    if validation <= 0:
        return "train"
    bucket = xxhash.xxh64_intdigest(example.prompt.encode(), seed) % 1_000_000
    return "validation" if bucket < validation * 1_000_000 else "train"


class DatasetWriter:
    """Writes tables into size-bounded shards per split; `close` gives them their final names."""

    def __init__(self, root: Path, fmt: Format = "parquet", shard_rows: int = 100_000):
        self.data, self.fmt, self.shard_rows = root / DATA_DIR, fmt, shard_rows
        self.data.mkdir(parents=True, exist_ok=True)
        self.rows: Counter[str] = Counter()
        self._shards: dict[str, list[Path]] = {}
        self._open: dict[str, pq.ParquetWriter | IO[str]] = {}
        self._in_shard: Counter[str] = Counter()
        self._pending: dict[str, list[pa.Table]] = {}

    def write(self, table: pa.Table, split: str) -> None:
        pending = self._pending.setdefault(split, [])
        pending.append(table)
        if sum(t.num_rows for t in pending) >= ROW_GROUP:
            self._flush(split)

    def _flush(self, split: str) -> None:
        table = pa.concat_tables(self._pending.pop(split, []) or [SCHEMA.empty_table()])
        while table.num_rows:
            if split not in self._open or self._in_shard[split] >= self.shard_rows:
                self._rotate(split)
            take = table.slice(0, self.shard_rows - self._in_shard[split])
            out = self._open[split]
            if isinstance(out, pq.ParquetWriter):
                out.write_table(take)
            else:
                out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in take.to_pylist())
            self._in_shard[split] += take.num_rows
            self.rows[split] += take.num_rows
            table = table.slice(take.num_rows)

    def _rotate(self, split: str) -> None:
        if split in self._open:
            self._open.pop(split).close()
        path = self.data / f"{split}-{len(self._shards.setdefault(split, [])):05d}.{self.fmt}"
        self._shards[split].append(path)
        self._open[split] = (
            pq.ParquetWriter(path, SCHEMA) if self.fmt == "parquet" else path.open("w", encoding="utf-8")
        )
        self._in_shard[split] = 0

    def close(self) -> dict[str, list[Path]]:
        """Finish every shard and rename it to its `-of-` name; an empty dataset still gets one train shard."""
        for split in list(self._pending):
            self._flush(split)
        if not self._shards:
            self._rotate("train")
        for out in self._open.values():
            out.close()
        self._open.clear()
        final: dict[str, list[Path]] = {}
        for split, paths in self._shards.items():
            final[split] = []
            for i, path in enumerate(paths):
                named = path.with_name(f"{split}-{i:05d}-of-{len(paths):05d}.{self.fmt}")
                path.rename(named)
                final[split].append(named)
        return final


def content_hash(root: Path, files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """sha256 over the shards (each file's path and sha256, in path order), and each file's sha256."""
    digests = {p.relative_to(root).as_posix(): file_sha256(p) for p in files}
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest(), digests
