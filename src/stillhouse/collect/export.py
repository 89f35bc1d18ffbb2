"""Export a run's answers as JSONL or Parquet, streamed from the store (Parquet in row batches)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stillhouse.collect.store import Exchange, RunStore
from stillhouse.core.errors import StillhouseError
from stillhouse.core.outputs import atomic_write, check_output

FORMATS = ("jsonl", "parquet")
_BATCH = 2048


def export(run_dir: str | Path, output: str | Path, fmt: str = "jsonl", *, overwrite: bool = False) -> int:
    """Write every answered exchange of `run_dir` to `output`; return how many were written.

    One record per request: key, prompt_id, sample, model, prompt (the last user message), messages,
    response (first choice), responses (all), finish_reason(s), prompt/completion tokens, logprobs
    (per choice, per generated token, when the run asked for them), system_fingerprint and meta.
    """
    if fmt not in FORMATS:
        raise StillhouseError(f"unknown export format '{fmt}'; use one of: {', '.join(FORMATS)}")
    output = check_output(output, overwrite=overwrite, inputs=[run_dir])
    with RunStore(run_dir, create=False) as store, atomic_write(output) as tmp:
        records = (record(e) for e in store.exchanges("ok"))
        return _jsonl(records, tmp) if fmt == "jsonl" else _parquet(records, tmp)


def record(e: Exchange) -> dict[str, Any]:
    """The export record of one exchange."""
    choices = e.choices
    users = [m for m in e.messages if m.get("role") == "user"]
    logprobs = [((c.get("logprobs") or {}).get("content")) for c in choices]
    return {
        "key": e.key,
        "prompt_id": e.prompt_id,
        "sample": e.sample,
        "model": e.request.get("model"),
        "prompt": _text(users[-1]["content"]) if users else None,
        "messages": [{"role": m["role"], "content": _text(m.get("content"))} for m in e.messages],
        "response": e.texts()[0] if choices else None,
        "responses": e.texts(),
        "finish_reason": choices[0].get("finish_reason") if choices else None,
        "finish_reasons": [c.get("finish_reason") for c in choices],
        "prompt_tokens": e.prompt_tokens,
        "completion_tokens": e.completion_tokens,
        "logprobs": logprobs if any(lp is not None for lp in logprobs) else None,
        "system_fingerprint": e.fingerprint,
        "meta": e.meta,
    }


def _text(content: Any) -> str:
    """Message content as text: multi-part content keeps its text parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _jsonl(records: Iterator[dict[str, Any]], output: Path) -> int:
    n = 0
    with output.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def _parquet(records: Iterator[dict[str, Any]], output: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    top = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
    token = pa.struct([("token", pa.string()), ("logprob", pa.float64()), ("top_logprobs", pa.list_(top))])
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("prompt_id", pa.string()),
            ("sample", pa.int32()),
            ("model", pa.string()),
            ("prompt", pa.string()),
            ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("response", pa.string()),
            ("responses", pa.list_(pa.string())),
            ("finish_reason", pa.string()),
            ("finish_reasons", pa.list_(pa.string())),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("logprobs", pa.list_(pa.list_(token))),
            ("system_fingerprint", pa.string()),
            ("meta", pa.string()),  # JSON: its fields differ from one prompts file to another
        ]
    )
    n = 0
    with pq.ParquetWriter(output, schema) as writer:
        batch: list[dict[str, Any]] = []
        for r in records:
            batch.append({**r, "meta": json.dumps(r["meta"], ensure_ascii=False) if r["meta"] else None})
            if len(batch) == _BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                n, batch = n + len(batch), []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            n += len(batch)
    return n
