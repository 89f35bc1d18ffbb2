"""How answers are judged, and how sure a rate is: graders for any suite, and Wilson's interval."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Match = Literal["exact", "normalised", "contains"]
MATCHES: tuple[Match, ...] = ("exact", "normalised", "contains")


def normalise(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or trailing full stop: formatting is not an answer."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip("\"'` ").rstrip(".!").strip()


@dataclass(frozen=True)
class Grader:
    """How answers are judged: `grade` says whether a reply is right, `extract` gives the answer
    two models are compared on (so "12 + 30 = 42" and "42" agree when the grader reads both as 42)."""

    grade: Callable[[str, str, str], bool]  # (skill, expected, reply) -> right?
    extract: Callable[[str, str | None, str], str]  # (skill, expected or None, reply) -> the graded answer


def text_grader(match: Match = "normalised") -> Grader:
    """For any suite: right means the same text (`exact`), the same normalised text, or a reply that
    `contains` the normalised expected answer; two replies agree when they are graded the same answer."""
    if match == "exact":
        return Grader(lambda _s, exp, reply: reply.strip() == exp.strip(), lambda _s, _e, reply: reply.strip())
    if match == "normalised":
        return Grader(lambda _s, exp, reply: normalise(reply) == normalise(exp), lambda _s, _e, reply: normalise(reply))

    def found(_s: str, expected: str | None, reply: str) -> str:
        return normalise(expected) if expected and normalise(expected) in normalise(reply) else normalise(reply)

    return Grader(lambda _s, exp, reply: bool(normalise(exp)) and normalise(exp) in normalise(reply), found)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n: sound near 0 and 1 and for small n, unlike k/n ± z·se."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))
