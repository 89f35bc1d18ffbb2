"""Evaluation: accuracy and agreement of two models (local or endpoints) on a suite of prompts."""

from stillhouse.core.grading import MATCHES, Grader, Match, normalise, text_grader, wilson
from stillhouse.evaluate.responders import Endpoint, LocalModel, Responder, responder
from stillhouse.evaluate.run import agrees, compare, evaluate, score
from stillhouse.evaluate.suites import load_suite

__all__ = [
    "MATCHES",
    "Endpoint",
    "Grader",
    "LocalModel",
    "Match",
    "Responder",
    "agrees",
    "compare",
    "evaluate",
    "load_suite",
    "normalise",
    "responder",
    "score",
    "text_grader",
    "wilson",
]
