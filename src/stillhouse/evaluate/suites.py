"""Evaluation suites: a JSONL file of {messages, answer?, skill?}, every line checked with its number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stillhouse.core.errors import StillhouseError

ROLES = ("system", "user", "assistant")


def load_suite(path: str | Path) -> list[dict[str, Any]]:
    """The suite's records; a reference answer given as the last assistant turn moves to `answer`.

    One clear error names the first bad line: not UTF-8, not JSON, not an object, messages that are not a
    non-empty list of {role, content} strings, or an answer or skill that is not text.
    """
    path = Path(path)
    if not path.is_file():
        raise StillhouseError(f"suite '{path}' is not a file; pass a JSONL of {{messages, answer, skill}}")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise StillhouseError(f"cannot read the suite {path}: {e.strerror or e}") from None
    records = []
    for i, raw in enumerate(lines, 1):
        if raw.strip():
            records.append(_record(raw, f"{path}:{i}"))
    if not records:
        raise StillhouseError(f"{path} holds no prompts")
    return records


def _record(raw: bytes, where: str) -> dict[str, Any]:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StillhouseError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise StillhouseError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise StillhouseError(f"{where}: expected a JSON object with 'messages', got {type(rec).__name__}")
    messages = rec.get("messages")
    ok = (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages)
    )
    if not ok:
        raise StillhouseError(
            f"{where}: 'messages' must be a non-empty list of {{role: system|user|assistant, content: text}}"
        )
    assert isinstance(messages, list)
    answer = rec.get("answer")
    if messages[-1]["role"] == "assistant":  # a reference answer is not part of the prompt
        answer = messages[-1]["content"] if answer is None else answer
        messages = messages[:-1]
    if not messages:
        raise StillhouseError(f"{where}: the chat has only an answer; add the prompt it answers")
    if answer is not None and not isinstance(answer, str | int | float):
        raise StillhouseError(f"{where}: 'answer' must be text or a number, got {type(answer).__name__}")
    skill = rec.get("skill", "all")
    if not isinstance(skill, str) or not skill:
        raise StillhouseError(f"{where}: 'skill' must be a non-empty string")
    return {**rec, "messages": messages, "answer": None if answer is None else str(answer), "skill": skill}
