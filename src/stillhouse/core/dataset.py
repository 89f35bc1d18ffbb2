"""The curated-dataset format: the one contract between `curate` (which writes it) and `train` (which reads it).

A dataset is a directory:

    README.md                      card: YAML front matter (HF `configs` + a `stillhouse:` block), then prose
    data/{split}-NNNNN-of-NNNNN.parquet|jsonl

Every shard has the columns of `SCHEMA`: `messages` (HF chat format, the teacher's answer last),
`logprobs` (the teacher's per-token top-k for that answer, OpenAI `choices[i].logprobs.content`
shape, null when not collected), `id`, `prompt_id`, `source` (the collect run) and `meta` (the
prompt record's own fields, as JSON). The card's `stillhouse:` block says where the rows came from:
teachers, terms, declared purpose, permission, source runs, every curate step's counts, the content
hash and the ledger head the dataset was made at. `content_hash` is the single definition of a
dataset's identity: curate writes it, train reads it, the ledger joins on it.
`datasets.load_dataset(DIR)` reads the directory through the card's `configs`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import files_hash

Format = Literal["parquet", "jsonl"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl")
DATA_DIR = "data"
CARD_FILE = "README.md"
ROW_GROUP = 16_384  # rows buffered per Parquet row group: batch-sized groups make every reader slower

_TOP = pa.struct([("token", pa.string()), ("logprob", pa.float64()), ("bytes", pa.list_(pa.int32()))])
TOKEN_LOGPROB = pa.struct([*(_TOP[i] for i in range(_TOP.num_fields)), ("top_logprobs", pa.list_(_TOP))])
LOGPROBS = pa.list_(TOKEN_LOGPROB)  # one answer's tokens, as an OpenAI-compatible API reports them
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema(
    [
        ("messages", MESSAGES),
        ("logprobs", LOGPROBS),
        ("id", pa.string()),
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
    ]
)


# ---------------------------------------------------------------- writing


class DatasetWriter:
    """Writes rows into size-bounded shards per split; `close` gives them their final `-of-` names."""

    def __init__(self, root: Path, fmt: Format = "parquet", shard_rows: int = 100_000):
        if fmt not in FORMATS:
            raise StillhouseError(f"unknown dataset format '{fmt}'; use one of: {', '.join(FORMATS)}")
        self.data, self.fmt, self.shard_rows = root / DATA_DIR, fmt, shard_rows
        self.data.mkdir(parents=True, exist_ok=True)
        self.rows: Counter[str] = Counter()
        self._shards: dict[str, list[Path]] = {}
        self._open: dict[str, pq.ParquetWriter | IO[str]] = {}
        self._in_shard: Counter[str] = Counter()
        self._pending: dict[str, list[pa.Table]] = {}

    def write(self, table: pa.Table, split: str) -> None:
        """Add rows (a table of `SCHEMA`) to `split`."""
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
                out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in _jsonl_rows(take))
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


def _jsonl_rows(table: pa.Table) -> list[dict[str, Any]]:
    """JSONL rows without the nulls Arrow fills into absent struct fields (a token with no `bytes`)."""
    rows = table.to_pylist()
    for r in rows:
        if r["logprobs"] is not None:
            r["logprobs"] = [_drop_none(t) for t in r["logprobs"]]
    return rows


def _drop_none(token: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in token.items() if v is not None}
    if "top_logprobs" in out:
        out["top_logprobs"] = [{k: v for k, v in t.items() if v is not None} for t in out["top_logprobs"]]
    return out


def write_card(root: Path, splits: Sequence[str], fmt: Format, block: dict[str, Any], body: str) -> None:
    """README.md: `configs` that `datasets.load_dataset(DIR)` reads, the `stillhouse:` block, then `body`."""
    front = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*.{fmt}"} for s in splits]}
        ],
        "tags": ["stillhouse", "distillation"],
        "stillhouse": block,
    }
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
    (root / CARD_FILE).write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- identity


def shard_files(root: Path) -> dict[str, list[Path]]:
    """The shards of each split, in name order; Parquet and JSONL both count."""
    found: dict[str, list[Path]] = {}
    for f in sorted((root / DATA_DIR).glob("*-*.*")):
        split, _, rest = f.name.partition("-")
        if f.suffix[1:] in FORMATS and rest:
            found.setdefault(split, []).append(f)
    return found


def content_hash(root: Path) -> tuple[str, dict[str, str]]:
    """The dataset's identity: sha256 over its shard files (path and content), and each file's sha256."""
    return files_hash(root, [f for files in shard_files(root).values() for f in files])


# ---------------------------------------------------------------- reading


@dataclass
class ChatDataset:
    """The rows of one curated dataset, with what its card says about where they came from."""

    path: Path
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    card: dict[str, Any] = field(default_factory=dict)  # the card's `stillhouse:` block
    hash: str = ""

    @property
    def has_logprobs(self) -> bool:
        return any(r.get("logprobs") for r in self.train)

    def provenance(self) -> dict[str, Any]:
        """What the card declares: teachers, terms, purpose, permission, source runs, the curate run."""
        keys = ("teachers", "terms", "purposes", "permissions", "source_runs", "run_id", "ledger_anchor")
        return {k: self.card[k] for k in keys if self.card.get(k) not in (None, "", [], {})}


def row_meta(row: dict[str, Any]) -> dict[str, Any]:
    """A row's `meta`: the JSON column of a dataset we wrote, or a dict from elsewhere; {} when absent."""
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta or "{}")
        except json.JSONDecodeError:
            raise StillhouseError(f"row {row.get('id', '?')}: 'meta' is a string that is not JSON") from None
    return dict(meta) if isinstance(meta, dict) else {}


def load_dataset(path: str | Path) -> ChatDataset:
    """Read and check a curated dataset directory; a wrong shape is one clear error naming what to fix."""
    path = Path(path)
    shards = shard_files(path)
    if not shards.get("train"):
        raise StillhouseError(
            f"{path} is not a curated dataset: expected data/train-*.parquet or .jsonl in it "
            "(make one with `stillhouse curate`)"
        )
    digest, _ = content_hash(path)
    return ChatDataset(
        path=path,
        train=_read_rows(shards["train"]),
        validation=_read_rows(shards.get("validation", [])),
        card=read_card(path),
        hash=digest,
    )


def read_card(path: Path) -> dict[str, Any]:
    """The `stillhouse:` block of the card's front matter ({} when there is no card or no block)."""
    card = path / CARD_FILE
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    try:
        front = yaml.safe_load(text[3:].split("\n---", 1)[0])
    except yaml.YAMLError as e:
        raise StillhouseError(f"{card}: the front matter is not valid YAML ({e}); fix or remove it") from None
    block = front.get("stillhouse") if isinstance(front, dict) else None
    return block if isinstance(block, dict) else {}


def _read_rows(files: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in files:
        for where, row in _file_rows(f):
            if "messages" not in row:
                raise StillhouseError(
                    f"{where} has no 'messages' (fields: {', '.join(row)}); a curated dataset holds chats as "
                    "a list of {role, content}"
                )
            row["messages"] = _messages(row["messages"], where)
            row["logprobs"] = _logprobs(row.get("logprobs"), where)
            rows.append(row)
    return rows


def _file_rows(f: Path) -> list[tuple[str, dict[str, Any]]]:
    if f.suffix == ".parquet":
        try:
            table = pq.read_table(f)
        except Exception as e:  # pyarrow raises several types for a damaged or foreign file
            raise StillhouseError(f"cannot read {f}: {e}") from None
        return [(f"{f} row {i}", r) for i, r in enumerate(table.to_pylist(), 1)]
    rows = []
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise StillhouseError(f"cannot read {f}: {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise StillhouseError(f"{f}:{i} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise StillhouseError(f"{f}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append((f"{f}:{i}", row))
    return rows


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise StillhouseError(f"{where}: 'messages' is a string that is not JSON") from None
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )
    if not ok:
        raise StillhouseError(f"{where}: 'messages' must be a list of {{role, content}} strings")
    if not any(m["role"] == "assistant" for m in value):
        raise StillhouseError(f"{where}: the chat has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _logprobs(value: Any, where: str) -> list[dict[str, Any]] | None:
    """The teacher's tokens for the answer; also accepts them as a JSON string or the whole `logprobs` object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise StillhouseError(f"{where}: 'logprobs' is a string that is not JSON") from None
    if isinstance(value, dict):
        value = value.get("content")
    if value in (None, []):
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("logprob"), int | float) for t in value
    ):
        raise StillhouseError(f"{where}: 'logprobs' must be a list of {{token, logprob, top_logprobs}} objects")
    return value
