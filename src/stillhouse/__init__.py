"""stillhouse: black-box LLM distillation, documented and detectable."""

from stillhouse.collect import CollectResult, collect
from stillhouse.collect.store import Exchange, RunStore, request_key
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.ledger import Ledger
from stillhouse.provenance.terms import Purpose

__all__ = [
    "CollectResult",
    "Exchange",
    "Ledger",
    "Purpose",
    "RunStore",
    "StillhouseError",
    "collect",
    "request_key",
]
__version__ = "0.1.0"
