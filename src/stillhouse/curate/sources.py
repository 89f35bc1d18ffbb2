"""Inputs to curation, streamed: run stores, and JSONL or Parquet exports of chats.

A run store yields one example per returned choice (and one per failed request, so the `failed`
filter can count it). An export file must use one schema throughout: `messages` (the last one the
assistant's answer), `prompt` plus an answer field, or stored exchanges (`request` and `response`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stillhouse.collect.store import STORE_FILE, Exchange, RunStore
from stillhouse.core.dataset import row_meta
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import file_sha256
from stillhouse.curate.example import Example
from stillhouse.provenance.ledger import Ledger, ledger_path

ANSWER_FIELDS = ("response", "completion", "answer", "output")
# Fields the schemas themselves use; everything else in a record is kept as the example's meta.
_KNOWN = frozenset({"messages", "prompt", "system", "request", "status", "error", "finish_reason", "run_id", "id"})
_KNOWN |= {"key", "prompt_id", "source", "meta", "logprobs", *ANSWER_FIELDS}
_KNOWN |= {"sample", "model", "responses", "finish_reasons", "prompt_tokens", "completion_tokens", "system_fingerprint"}
EXPORT_SUFFIXES = (".jsonl", ".parquet")


def token_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A choice's `logprobs.content`: the teacher's tokens with their top-k, when it was asked for them."""
    tokens = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    return tokens if isinstance(tokens, list) and tokens else None


def mean_logprob(tokens: list[dict[str, Any]] | None) -> float | None:
    values = [t["logprob"] for t in tokens or () if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)]
    return sum(values) / len(values) if values else None


def from_exchange(x: Exchange) -> Iterator[Example]:
    """An exchange's examples: one per choice, or a single answerless one when the request failed."""
    messages = x.messages
    if not isinstance(messages, list):
        raise ValueError(f"exchange {x.key}: request.messages is not a list")
    if x.status != "ok" or not x.choices:
        yield Example(messages, "", f"{x.key}:0", x.run_id, x.prompt_id, x.status, meta=x.meta)
        return
    for i, (choice, text) in enumerate(zip(x.choices, x.texts(), strict=True)):
        tokens = token_logprobs(choice)
        yield Example(
            messages,
            text,
            f"{x.key}:{i}",
            x.run_id,
            x.prompt_id,
            x.status,
            choice.get("finish_reason"),
            mean_logprob(tokens),
            tokens,
            x.meta,
        )


@dataclass
class Source:
    """One input: a run directory, or an export file."""

    path: Path
    kind: str  # "run", "jsonl" or "parquet"

    def examples(self) -> Iterator[Example]:
        try:
            if self.kind == "run":
                yield from self._run()
            elif self.kind == "jsonl":
                yield from self._jsonl()
            else:
                yield from self._parquet()
        except (sqlite3.DatabaseError, pa.ArrowException, OSError, ValueError) as e:  # ValueError: bad JSON
            raise StillhouseError(f"cannot read {self.path}: {e}") from e

    def _run(self) -> Iterator[Example]:
        with RunStore(self.path, create=False) as store:
            for x in store.exchanges(status=None):
                yield from from_exchange(x)

    def _jsonl(self) -> Iterator[Example]:
        schema = None
        with self.path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.path}:{line_no}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise StillhouseError(f"{where} is not valid JSON: {e.msg}") from e
                schema = _same_schema(record, schema, where)
                yield from _record_examples(record, schema, f"{self.path.name}:{line_no}", self.path.name, where)

    def _parquet(self) -> Iterator[Example]:
        file = pq.ParquetFile(self.path)
        schema = _schema_of(set(file.schema_arrow.names), str(self.path))
        row = 0
        for batch in file.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                where = f"{self.path} row {row}"
                yield from _record_examples(record, schema, f"{self.path.name}:{row}", self.path.name, where)

    def describe(self) -> dict[str, Any]:
        """What the ledger records about this input, so the dataset links back to it."""
        if self.kind != "run":
            return {"path": str(self.path), "kind": self.kind, "sha256": file_sha256(self.path)}
        info: dict[str, Any] = {"path": str(self.path), "kind": "run"}
        with RunStore(self.path, create=False) as store:
            info["counts"] = store.counts()
        led = ledger_path(self.path)
        if led.exists():
            with Ledger(led, readonly=True) as ledger:
                entries = ledger.entries()
            info["ledger"] = str(led)
            info["ledger_head"] = entries[-1].hash if entries else None
        return info


def _schema_of(fields: set[str], where: str) -> str:
    if "messages" in fields:
        return "messages"
    if "request" in fields and "response" in fields:
        return "exchange"
    if "prompt" in fields and fields & set(ANSWER_FIELDS):
        return "prompt"
    raise StillhouseError(
        f"{where}: unrecognised record with fields {sorted(fields)}; expected 'messages', "
        f"'prompt' with one of {', '.join(ANSWER_FIELDS)}, or 'request' with 'response'"
    )


def _same_schema(record: Any, schema: str | None, where: str) -> str:
    if not isinstance(record, dict):
        raise StillhouseError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    found = _schema_of(set(record), where)
    if schema is not None and found != schema:
        raise StillhouseError(
            f"{where}: mixed schemas: this record is a '{found}' record but earlier ones are '{schema}' "
            "records; split the file or convert it to one schema"
        )
    return found


def _record_examples(record: dict[str, Any], schema: str, ident: str, file: str, where: str) -> Iterator[Example]:
    key = str(record.get("id") or record.get("key") or ident)
    source = str(record.get("run_id") or record.get("source") or file)
    prompt_id = record.get("prompt_id")
    status = str(record.get("status") or "ok")
    meta = {k: v for k, v in record.items() if k not in _KNOWN}
    meta |= row_meta(record)  # a dataset we wrote: meta is its own column, as JSON
    try:
        if schema == "exchange":
            request, response = (
                json.loads(v) if isinstance(v, str) else v for v in (record["request"], record["response"])
            )
            yield from from_exchange(
                Exchange(key, prompt_id or "", 0, request or {}, status, source, "", response, meta=meta)
            )
            return
        if schema == "messages":
            messages = list(record["messages"])
            if messages and messages[-1].get("role") == "assistant":
                answer = messages.pop()["content"]
            else:  # an export of a run store: the prompt's messages, the answer beside them
                answer = next((record[f] for f in ANSWER_FIELDS if f in record), "")
        else:
            system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
            messages = [*system, {"role": "user", "content": record["prompt"]}]
            answer = next(record[f] for f in ANSWER_FIELDS if f in record) or ""
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise StillhouseError(f"{where}: malformed '{schema}' record ({type(e).__name__}: {e})") from e
    if not isinstance(answer, str):
        raise StillhouseError(f"{where}: the answer is a {type(answer).__name__}, not text")
    tokens = _record_logprobs(record.get("logprobs"), where)
    finish = record.get("finish_reason")
    yield Example(messages, answer, key, source, prompt_id, status, finish, mean_logprob(tokens), tokens, meta)


def _record_logprobs(value: Any, where: str) -> list[dict[str, Any]] | None:
    """A record's logprobs: a dataset's (one answer's tokens) or an export's (per choice: the first)."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, list) and value and (isinstance(value[0], list) or value[0] is None):
        value = value[0]
    if value in (None, []):
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise StillhouseError(f"{where}: 'logprobs' must be a list of {{token, logprob, top_logprobs}} objects")
    return value


def open_sources(paths: list[Path]) -> list[Source]:
    """Resolve inputs up front, so a bad path fails before anything is written."""
    sources: list[Source] = []
    for path in paths:
        if not path.exists():
            raise StillhouseError(f"input {path} does not exist")
        if path.is_dir():
            if (path / STORE_FILE).exists():
                sources.append(Source(path, "run"))
                continue
            files = sorted(p for p in path.rglob("*") if p.suffix in EXPORT_SUFFIXES)
            if not files:
                raise StillhouseError(f"{path} holds neither a run store ({STORE_FILE}) nor .jsonl/.parquet files")
            sources.extend(Source(p, p.suffix[1:]) for p in files)
        elif path.suffix in EXPORT_SUFFIXES:
            sources.append(Source(path, path.suffix[1:]))
        else:
            raise StillhouseError(f"{path}: not a run directory, .jsonl or .parquet file")
    return sources
