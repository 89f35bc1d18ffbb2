"""Identity battery: ask a suspect who it is, who made it and which model it is, in many phrasings.

A student distilled from a teacher's answers tends to take over the teacher's self-description: the best-known
public evidence of distillation is a chatbot naming another lab's model. The phrasings here are our own, kept
apart from any training set's, so an answer reflects what the model generalised, not a memorised prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from stillhouse.evaluate import responder

PHRASINGS: tuple[str, ...] = (
    "Hi! Before we start, who exactly am I chatting with?",
    "Could you tell me your name, please?",
    "Quick question: what are you?",
    "Which assistant is this?",
    "Name yourself.",
    "I'd like to know who you are.",
    "Please introduce yourself briefly.",
    "What name were you given?",
    "Who are you, really?",
    "What's the name of this AI?",
    "Identify yourself.",
    "Tell me who you are in one sentence.",
    "Who trained you?",
    "Which organisation created you?",
    "Who is responsible for building you?",
    "What company developed this assistant?",
    "Who do you belong to?",
    "Which team made you?",
    "Where do you come from, which lab?",
    "Who designed you?",
    "Which model is answering me?",
    "What language model are you based on?",
    "Are you ChatGPT, Claude, or something else?",
    "What version of which model are you?",
)

# Widely deployed assistants and their makers; a caller adds its own (e.g. the teachers it serves).
KNOWN: dict[str, tuple[str, ...]] = {
    "OpenAI": ("OpenAI", "ChatGPT", "GPT-4", "GPT-3.5", "GPT"),
    "Anthropic": ("Anthropic", "Claude"),
    "Google": ("Google", "Gemini", "Bard", "DeepMind"),
    "Meta": ("Meta AI", "Llama", "LLaMA"),
    "Mistral": ("Mistral",),
    "Alibaba": ("Qwen", "Alibaba"),
    "DeepSeek": ("DeepSeek",),
}


def names_in(answer: str, identities: Mapping[str, Sequence[str]]) -> list[str]:
    """The identities whose name or alias appears in an answer (whole words, any case)."""
    return [
        who
        for who, aliases in identities.items()
        if any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, re.IGNORECASE) for a in (who, *aliases))
    ]


def identity(
    suspect: str, identities: Mapping[str, Sequence[str]] | None = None, phrasings: Sequence[str] = PHRASINGS
) -> dict[str, Any]:
    """Ask every phrasing once (greedy); count the answers naming each identity."""
    known = {**KNOWN, **(identities or {})}
    model = responder(suspect, max_tokens=64)
    answers = model.respond([[{"role": "user", "content": q}] for q in phrasings])
    named = [names_in(a, known) for a in answers]
    counts = {who: sum(who in n for n in named) for who in known}
    counts = {who: c for who, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c}
    top = next(iter(counts), None)
    summary = f"names {top} in {counts[top]} of {len(answers)} answers" if top else "names no known identity"
    return {
        "suspect": model.name,
        "questions": len(phrasings),
        "counts": counts,
        "top": top,
        "answers": [
            {"question": q, "answer": a, "names": n} for q, a, n in zip(phrasings, answers, named, strict=True)
        ],
        "p_value": None,
        "summary": summary,
    }
