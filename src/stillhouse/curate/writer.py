"""Curated examples as rows of the dataset format (stillhouse.core.dataset), and which split each goes to."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import xxhash

from stillhouse.core.dataset import SCHEMA
from stillhouse.curate.example import Example


def to_table(batch: Sequence[Example]) -> pa.Table:
    """A table of `SCHEMA`: the chat with the answer last, the answer's logprobs, ids, source and meta."""
    return pa.Table.from_pylist(
        [
            {
                "messages": e.chat(),
                "logprobs": e.logprobs,
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
