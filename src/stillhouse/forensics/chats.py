"""The conversations a forensic test reads: our served answers (a collect run directory or its JSONL export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillhouse.collect.store import RunStore
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import file_sha256


@dataclass(frozen=True)
class Chat:
    """A prompt (messages up to the answer) and, when known, the answer our server gave."""

    prompt: list[dict[str, Any]]
    answer: str | None
    sampling: dict[str, Any] | None = None  # how our server was asked (from a run's requests): a control repeats it


SAMPLING = ("temperature", "top_p", "max_tokens", "seed", "stop")


def load_chats(path: str | Path) -> tuple[list[Chat], str]:
    """Chats from a collect run directory (its store) or a JSONL file of {"messages", "response"?} records.

    Returns them with a hash of the input, for evidence files.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "store.sqlite").exists():
            raise StillhouseError(f"{path} is not a collect run directory (no store.sqlite); pass a run or a JSONL")
        with RunStore(path, create=False) as store:
            chats = [
                Chat(e.messages, texts[0], {k: e.request[k] for k in SAMPLING if k in e.request})
                for e in store.exchanges("ok")
                if (texts := e.texts())
            ]
        return chats, file_sha256(path / "store.sqlite")
    if not path.is_file():
        raise StillhouseError(f"{path} does not exist; pass a collect run directory or a JSONL of chats")
    chats = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                messages = list(rec["messages"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise StillhouseError(f"{path}:{n} is not a JSON object with 'messages'") from None
            answer = rec.get("response")
            if messages and messages[-1].get("role") == "assistant":
                answer, messages = messages[-1].get("content"), messages[:-1]
            chats.append(Chat(messages, answer))
    return chats, file_sha256(path)
