"""One training example on its way through curation, and the shape every pipeline step has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Target = Literal["prompt", "answer", "both"]


def content_text(content: Any) -> str:
    """A message's text: a plain string, or the text parts of a multi-part content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(slots=True)
class Example:
    """A prompt (the chat so far) and one answer to it, with what is known about how it came to be."""

    messages: list[dict[str, Any]]  # the request's messages, without the answer
    answer: str
    id: str
    source: str  # the collect run it came from, or the file when the input is an export
    prompt_id: str | None = None
    status: str = "ok"
    finish_reason: str | None = None
    logprob: float | None = None  # mean per-token log-probability of the answer, when the teacher gave them
    logprobs: list[dict[str, Any]] | None = None  # the teacher's per-token top-k for the answer, as the API gave them
    meta: dict[str, Any] = field(default_factory=dict)
    seq: int = -1  # position in the stream, set by the runner

    @property
    def prompt(self) -> str:
        return "\n".join(content_text(m.get("content")) for m in self.messages)

    def text(self, target: Target) -> str:
        if target == "prompt":
            return self.prompt
        if target == "answer":
            return self.answer
        return f"{self.prompt}\n{self.answer}"

    def chat(self) -> list[dict[str, str]]:
        """The conversation in Hugging Face chat format, answer last."""
        turns = [{"role": str(m.get("role", "user")), "content": content_text(m.get("content"))} for m in self.messages]
        return [*turns, {"role": "assistant", "content": self.answer}]


class Step(Protocol):
    """A pipeline step: looks at a batch and says, per example, None to keep it or a reason to drop it.

    Steps see batches rather than single examples because dedup and decontamination are vectorised.
    """

    name: str

    def check(self, batch: Sequence[Example]) -> list[str | None]: ...

    def describe(self) -> dict[str, Any]:
        """Its settings, for the dataset card and the ledger."""
        ...
