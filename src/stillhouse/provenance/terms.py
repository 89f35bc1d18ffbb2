"""What the major providers' terms and common open-weight licences say about using outputs.

A summary to stop honest mistakes, not legal advice: a run whose declared purpose the teacher's
terms forbid does not start unless the user records the permission they hold, and the ledger
keeps that record. Users with other agreements pass `--permission`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stillhouse.core.client import host_of
from stillhouse.core.errors import StillhouseError


class Purpose(StrEnum):
    evaluation = "evaluation"
    augmentation = "augmentation"
    distillation = "distillation"


@dataclass(frozen=True)
class Terms:
    id: str
    name: str
    forbids: frozenset[Purpose]
    clause: str
    hosts: tuple[str, ...] = ()


_D, _A = Purpose.distillation, Purpose.augmentation

KNOWN_TERMS: dict[str, Terms] = {
    t.id: t
    for t in [
        Terms(
            "openai",
            "OpenAI Terms of Use",
            frozenset({_D}),
            "no using Output to develop models that compete with OpenAI",
            ("api.openai.com",),
        ),
        Terms(
            "anthropic",
            "Anthropic Commercial Terms",
            frozenset({_D}),
            "no using the Services to build a competing product or to train competing AI models",
            ("api.anthropic.com",),
        ),
        Terms(
            "google-gemini",
            "Gemini API Additional Terms",
            frozenset({_D}),
            "no using the Services to develop models that compete with Gemini",
            ("generativelanguage.googleapis.com", "aiplatform.googleapis.com"),
        ),
        Terms(
            "xai",
            "xAI Terms of Service",
            frozenset({_D}),
            "no using outputs to develop competing models",
            ("api.x.ai",),
        ),
        Terms(
            "mistral",
            "Mistral AI Terms of Use",
            frozenset({_D}),
            "no using outputs to train models that compete with Mistral AI's",
            ("api.mistral.ai",),
        ),
        Terms(
            "deepseek",
            "DeepSeek Open Platform Terms",
            frozenset(),
            "outputs may be used, including for distillation",
            ("api.deepseek.com",),
        ),
        Terms(
            "llama-3.1",
            "Llama 3.1+ Community License",
            frozenset(),
            "outputs may train other models; derivatives must say 'Built with Llama' and name 'Llama'",
        ),
        Terms(
            "llama-3",
            "Meta Llama 3 Community License",
            frozenset({_D, _A}),
            "no using outputs to improve any LLM other than Llama 3 derivatives",
        ),
        Terms(
            "gemma",
            "Gemma Terms of Use",
            frozenset(),
            "models trained on outputs are Model Derivatives bound by the Gemma terms",
        ),
        Terms(
            "qwen",
            "Qwen License Agreement",
            frozenset(),
            "derivatives trained on outputs must say 'Built with Qwen' or 'Improved using Qwen'",
        ),
        Terms("apache-2.0", "Apache License 2.0", frozenset(), "no restriction on outputs"),
        Terms("mit", "MIT License", frozenset(), "no restriction on outputs"),
        Terms("own", "The user's own model", frozenset(), "the user owns the teacher"),
    ]
}


def resolve(base_url: str, declared: str | None) -> Terms | None:
    """The terms that govern this teacher: a declared known id wins, else the provider behind the host."""
    if declared and declared.lower() in KNOWN_TERMS:
        return KNOWN_TERMS[declared.lower()]
    host = host_of(base_url)
    for t in KNOWN_TERMS.values():
        if any(host == h or host.endswith("." + h) for h in t.hosts):
            return t
    return None


def check(base_url: str, declared: str | None, purpose: Purpose, permission: str | None) -> Terms | None:
    """Refuse a run its teacher's terms forbid, unless the user records a permission."""
    terms = resolve(base_url, declared)
    if terms and purpose in terms.forbids and not permission:
        raise StillhouseError(
            f"{terms.name} forbid '{purpose}' ({terms.clause}); if you hold permission, record it with "
            f'--permission "...", or declare another purpose'
        )
    return terms
