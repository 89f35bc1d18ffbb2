"""Curated datasets as training and distillation see them: chat rows, their card, and their hash.

A curated dataset is a directory with `data/train-*.parquet` (optionally `data/validation-*.parquet`)
holding a `messages` column in HF chat format, optional `skill` / `answer` columns, and for logit
distillation a `logprobs` column with the teacher's OpenAI-style `choices[0].logprobs.content`.
Its provenance (teacher, terms, purpose) is read from the card's YAML front matter or a
`stillhouse.json`, whichever is there: training names them in the model card and the ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from stillhouse.core.errors import StillhouseError

META_FILE = "stillhouse.json"


@dataclass
class ChatDataset:
    """The rows of one curated dataset, with what its card says about where they came from."""

    path: Path
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    @property
    def has_logprobs(self) -> bool:
        return any(r.get("logprobs") for r in self.train)

    def provenance(self) -> dict[str, Any]:
        """teacher / terms / purpose / permission as declared by the dataset, for cards and the ledger."""
        nested = self.meta.get("stillhouse") if isinstance(self.meta.get("stillhouse"), dict) else {}
        found = {k: nested.get(k, self.meta.get(k)) for k in ("teacher", "terms", "purpose", "permission", "run_id")}
        if isinstance(found["teacher"], str):  # the ledger's shape is teacher={model, host, ...}
            found["teacher"] = {"model": found["teacher"]}
        return {k: v for k, v in found.items() if v not in (None, "", {}, [])}


def load_dataset(path: str | Path) -> ChatDataset:
    """Read and check a curated dataset directory; a wrong shape is one clear error naming what to fix."""
    path = Path(path)
    train_files = sorted((path / "data").glob("train-*.parquet"))
    if not train_files:
        raise StillhouseError(
            f"{path} is not a curated dataset: expected data/train-*.parquet in it (make one with `stillhouse curate`)"
        )
    val_files = sorted((path / "data").glob("validation-*.parquet"))
    return ChatDataset(
        path=path,
        train=_read_rows(train_files),
        validation=_read_rows(val_files),
        meta=read_card(path),
        hash=files_hash(path, [*train_files, *val_files]),
    )


def _read_rows(files: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as e:  # pyarrow raises several types for a damaged or foreign file
            raise StillhouseError(f"cannot read {f}: {e}") from e
        if "messages" not in table.column_names:
            raise StillhouseError(
                f"{f} has no 'messages' column (columns: {', '.join(table.column_names)}); "
                "a curated dataset holds chats as a list of {role, content}"
            )
        for i, row in enumerate(table.to_pylist()):
            row["messages"] = _messages(row["messages"], f, i)
            if isinstance(row.get("logprobs"), str):
                row["logprobs"] = json.loads(row["logprobs"])
            rows.append(row)
    return rows


def _messages(value: Any, file: Path, i: int) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = json.loads(value)
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )
    if not ok:
        raise StillhouseError(f"{file} row {i}: 'messages' must be a list of {{role, content}} strings")
    if not any(m["role"] == "assistant" for m in value):
        raise StillhouseError(f"{file} row {i}: the chat has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def read_card(path: Path) -> dict[str, Any]:
    """The dataset card's YAML front matter merged with `stillhouse.json`; either may be absent or partial."""
    meta: dict[str, Any] = {}
    readme = path / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text[3:].split("\n---", 1)[0]
            try:
                loaded = yaml.safe_load(front)
            except yaml.YAMLError:
                loaded = None
            if isinstance(loaded, dict):
                meta.update(loaded)
    side = path / META_FILE
    if side.exists():
        try:
            loaded = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise StillhouseError(f"{side} is not valid JSON: {e}") from e
        if isinstance(loaded, dict):
            meta.update(loaded)
    return meta


def files_hash(root: Path, files: list[Path]) -> str:
    """sha256 over (relative name, content) of each file, in name order: the identity the ledger links."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
