"""Decontamination: drop examples that share a long word n-gram with an evaluation set.

Every evaluation item (a JSONL/JSON/Parquet record, or a line of a .txt file) contributes its word
n-grams (13 by default, as in GPT-3's contamination study); an item shorter than that contributes
itself whole, so a short question is still caught when an example contains it verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stillhouse.core.errors import StillhouseError
from stillhouse.curate.example import Example, content_text
from stillhouse.curate.hashing import ngram_hashes, token_hashes
from stillhouse.curate.sources import file_sha256

EVAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


def record_text(record: Any) -> str:
    """An evaluation record's words: its chat turns, or every text field it has."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return ""
    if isinstance(record.get("messages"), list):
        return "\n".join(content_text(m.get("content")) for m in record["messages"] if isinstance(m, dict))
    parts: list[str] = []
    for value in record.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, str))
    return "\n".join(parts)


def _records(path: Path) -> Iterator[Any]:
    if path.suffix == ".txt":
        yield from (line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from data if isinstance(data, list) else [data]
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())
    else:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()


@dataclass
class EvalSet:
    """An evaluation set's n-gram hashes, by gram length (n, and the lengths of its shorter items)."""

    name: str
    path: Path
    items: int = 0
    grams: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, path: Path, n: int) -> EvalSet:
        if not path.is_file():
            raise StillhouseError(f"evaluation set '{name}': {path} does not exist")
        if path.suffix not in EVAL_SUFFIXES:
            raise StillhouseError(f"evaluation set '{name}': {path} is not one of {', '.join(EVAL_SUFFIXES)}")
        found: dict[int, list[np.ndarray]] = {}
        self = cls(name, path)
        records = _records(path)
        try:
            while chunk := [record_text(r) for r in islice(records, 4096)]:
                self.items += len(chunk)
                hashes, lengths = token_hashes(chunk)
                found.setdefault(n, []).append(ngram_hashes(hashes, lengths, n, short_whole=False)[0])
                for k in np.unique(lengths[(lengths > 0) & (lengths < n)]).tolist():
                    short = [t for t, length in zip(chunk, lengths.tolist(), strict=True) if length == k]
                    found.setdefault(k, []).append(ngram_hashes(*token_hashes(short), k, short_whole=False)[0])
        except (json.JSONDecodeError, UnicodeDecodeError, pa.ArrowException, OSError) as e:
            raise StillhouseError(f"evaluation set '{name}': cannot read {path}: {e}") from e
        self.grams = {k: u for k, v in found.items() if len(u := np.unique(np.concatenate(v)))}
        return self

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": file_sha256(self.path), "items": self.items}


def parse_eval_arg(arg: str) -> tuple[str, Path]:
    """NAME=PATH, or PATH (named after the file)."""
    name, sep, path = arg.partition("=")
    return (name, Path(path)) if sep and name else (Path(arg).stem, Path(arg))


class Decontaminate:
    """Drops an example whose prompt or answer shares an n-gram with any set; the reason is the first such set."""

    name = "decontamination"

    def __init__(self, sets: Sequence[EvalSet], n: int = 13):
        self.sets, self.n = list(sets), n
        self.lengths = sorted({k for s in self.sets for k in s.grams})

    def check(self, batch: Sequence[Example]) -> list[str | None]:
        hashes, lengths = token_hashes([e.text("both") for e in batch])
        first = np.full(len(batch), len(self.sets))
        for k in self.lengths:
            grams, owners = ngram_hashes(hashes, lengths, k, short_whole=False)
            for i, s in enumerate(self.sets):
                table = s.grams.get(k)
                if table is None:
                    continue
                at = np.minimum(np.searchsorted(table, grams), len(table) - 1)
                hit = owners[table[at] == grams]
                first[hit] = np.minimum(first[hit], i)
        return [self.sets[i].name if i < len(self.sets) else None for i in first.tolist()]

    def describe(self) -> dict[str, Any]:
        return {"ngram": self.n, "sets": {s.name: s.describe() for s in self.sets}}
