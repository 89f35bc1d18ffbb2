"""stillhouse: black-box LLM distillation, documented and detectable."""

from stillhouse.errors import StillhouseError
from stillhouse.ledger import Ledger
from stillhouse.store import Exchange, RunStore, request_key
from stillhouse.terms import Purpose

__all__ = ["Exchange", "Ledger", "Purpose", "RunStore", "StillhouseError", "request_key"]
__version__ = "0.1.0"
