"""Evaluation: accuracy and agreement of two models (local or endpoints) on a suite of prompts."""

from stillhouse.evaluate.run import (
    Endpoint,
    Grader,
    LocalModel,
    compare,
    default_grader,
    evaluate,
    load_suite,
    normalise,
    responder,
    score,
    wilson,
)

__all__ = [
    "Endpoint",
    "Grader",
    "LocalModel",
    "compare",
    "default_grader",
    "evaluate",
    "load_suite",
    "normalise",
    "responder",
    "score",
    "wilson",
]
