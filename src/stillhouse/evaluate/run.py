"""Evaluate two models on the same prompts: accuracy, agreement, and their spread.

Either side may be a local model directory or an OpenAI-compatible endpoint (responders.py), so a
distilled student can be checked against the API it came from, or two models compared. Agreement
means the same graded answer (core/grading.py); its 95 % interval is Wilson's. Each run is recorded in
the ledger through `stage_run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from stillhouse.core.config import Config
from stillhouse.core.grading import Grader, Match, text_grader, wilson
from stillhouse.evaluate.responders import Responder
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger, stage_run

# ---------------------------------------------------------------- scoring


def agrees(record: dict[str, Any], a: str, b: str, grader: Grader) -> bool:
    """Whether two replies to a record's prompt give the same graded answer (a paired test's outcome)."""
    skill = record.get("skill") or "all"
    expected = None if record.get("answer") is None else str(record["answer"])
    return grader.extract(skill, expected, a) == grader.extract(skill, expected, b)


def score(records: Sequence[dict[str, Any]], a: list[str], b: list[str], grader: Grader) -> dict[str, dict[str, Any]]:
    """Per skill (and 'all'): accuracy of a and of b, and how often they give the same graded answer."""
    tallies: dict[str, dict[str, int]] = {}
    for rec, ra, rb in zip(records, a, b, strict=True):
        skill, same = rec.get("skill") or "all", agrees(rec, ra, rb, grader)
        for key in {skill, "all"}:
            t = tallies.setdefault(key, {"n": 0, "graded": 0, "a": 0, "b": 0, "same": 0})
            t["n"] += 1
            t["same"] += same
            if rec.get("answer") is not None:
                t["graded"] += 1
                t["a"] += bool(grader.grade(skill, str(rec["answer"]), ra))
                t["b"] += bool(grader.grade(skill, str(rec["answer"]), rb))
    out = {}
    for key, t in tallies.items():
        graded = t["graded"]
        out[key] = {
            "n": t["n"],
            "a_accuracy": t["a"] / graded if graded else None,
            "b_accuracy": t["b"] / graded if graded else None,
            "agreement": t["same"] / t["n"],
            "agreement_ci95": list(wilson(t["same"], t["n"])),
        }
    return out


def evaluate(
    student: Responder,
    teacher: Responder,
    records: Sequence[dict[str, Any]],
    grader: Grader | None = None,
    *,
    ledger: str | Path | None = None,
    suite: str = "",
) -> dict[str, Any]:
    """Student's accuracy and agreement with the teacher, and the teacher's own accuracy, per skill."""
    return _run({"teacher": teacher, "student": student}, records, grader, ledger, suite, _eval_view)


def compare(
    a: Responder,
    b: Responder,
    records: Sequence[dict[str, Any]],
    grader: Grader | None = None,
    *,
    ledger: str | Path | None = None,
    suite: str = "",
) -> dict[str, Any]:
    """How often two models give the same graded answer on the same prompts, with a 95 % interval."""
    return _run({"a": a, "b": b}, records, grader, ledger, suite, _compare_view)


def _eval_view(names: dict[str, str], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def view(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": s["n"],
            "teacher": {"accuracy": s["a_accuracy"]},
            "student": {
                "accuracy": s["b_accuracy"],
                "agreement": s["agreement"],
                "agreement_ci95": s["agreement_ci95"],
            },
        }

    top = view(scores["all"])
    top["teacher"]["model"], top["student"]["model"] = names["teacher"], names["student"]
    return top | {"per_skill": {k: view(v) for k, v in sorted(scores.items()) if k != "all"}}


def _compare_view(names: dict[str, str], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def view(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": s["n"],
            "agreement": s["agreement"],
            "agreement_ci95": s["agreement_ci95"],
            "a": {"accuracy": s["a_accuracy"]},
            "b": {"accuracy": s["b_accuracy"]},
        }

    top = view(scores["all"])
    top["a"]["model"], top["b"]["model"] = names["a"], names["b"]
    return top | {"per_skill": {k: view(v) for k, v in sorted(scores.items()) if k != "all"}}


def _run(
    sides: dict[str, Responder],
    records: Sequence[dict[str, Any]],
    grader: Grader | None,
    ledger: str | Path | None,
    suite: str,
    view: Callable[[dict[str, str], dict[str, dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Ask both sides every prompt, score, and record the run as eval.start / eval.end."""
    grader = grader or text_grader()
    a, b = sides.values()
    names = {k: {"model": r.name} for k, r in sides.items()}  # the ledger's teacher={model, ...} shape
    with (
        Ledger(ledger or default_ledger(b)) as led,
        stage_run(led, "eval", {"suite": suite, "prompts": len(records)} | names) as run,
    ):
        chats = [r["messages"] for r in records]
        replies_a, replies_b = a.respond(chats), b.respond(chats)
        result = view({k: r.name for k, r in sides.items()}, score(records, replies_a, replies_b, grader))
        result["suite"] = suite
        run.end["result"] = result
    return result | {"ledger": {"path": str(led.path), "run_id": run.run_id}}


def default_ledger(student: Responder) -> Path:
    """The ledger a trained student names in its stillhouse.json (its lineage), else ./ledger.sqlite."""
    meta = getattr(student, "path", None)
    if meta is not None and (meta / "stillhouse.json").exists():
        recorded = json.loads((meta / "stillhouse.json").read_text()).get("ledger")
        if recorded:
            return Path(recorded)
    return Path(LEDGER_FILE)


class EvalConfig(Config):
    """What an evaluation asks and how it grades."""

    suite: str = Field(default="micro", description="'micro' (the embedded world) or a JSONL of {messages, answer}.")
    match: Match = Field(default="normalised", description="How a JSONL suite's answers are graded.")
    n: int = Field(default=50, ge=1, le=100_000, description="Prompts per skill for the micro suite.")
    seed: int = Field(default=0, description="Seeds the micro suite's prompts.")
    max_tokens: int = Field(default=192, ge=1, description="Completion tokens per answer.")
