"""The micro-world as an evaluation suite: held-out prompts per skill, and graders that read the answer."""

from __future__ import annotations

from typing import Any

from stillhouse.core.grading import Grader
from stillhouse.embedded import world


def micro_suite(n: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """`n` held-out prompts of each skill."""
    return [r for s in world.SKILLS for r in world.make_prompts(n, skills=[s], split="heldout", seed=seed)]


PROBE_SEED = 31


def lineage_probes(n: int = 120) -> list[list[dict[str, Any]]]:
    """Lineage's default probe set: `n` held-out-phrasing prompts over every skill (the same for every caller,
    so verdicts from the CLI and from quickstart are comparable)."""
    return [r["messages"] for r in world.make_prompts(n, split="heldout", seed=PROBE_SEED)]


def world_grader() -> Grader:
    """The world's graders: agreement compares the answers they extract, not the wording."""
    return Grader(grade=world.grade, extract=lambda skill, expected, reply: world.extract(skill, reply, expected))
