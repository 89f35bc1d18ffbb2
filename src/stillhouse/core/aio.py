"""Run a coroutine to completion on the fastest event loop this platform has.

uvloop (Linux, macOS) spends less CPU per HTTP exchange than asyncio's default loop, and that CPU is
what bounds a collector at high concurrency on one core (bench/collect.py, C=64: 2,150 -> 2,907 req/s);
elsewhere the default loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # Windows, or not installed
    uvloop = None

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(coro)
