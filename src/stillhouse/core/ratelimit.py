"""When the next request may go: RPM/TPM pacing, the server's own timing headers, and a shared gate.

- `Pace` spaces requests (or tokens) at a per-minute rate with one second of burst (GCRA), so C
  workers reserve slots without a lock and without a background refill task.
- The gate is one instant shared by every worker: nothing is sent before it. A storm of 429s (half
  of the last 16 answers) or a server reporting an exhausted limit
  (`x-ratelimit-remaining-* = 0`) closes it until the server's reset instant, so the whole run waits
  rather than hammering a limited endpoint. A lone 429 amid successes delays only its own request,
  to its Retry-After instant: a random 10 % of 429s must not idle the other 90 %.
- `retry_after` reads `retry-after-ms`, then `Retry-After` in seconds or as an HTTP date.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
# A storm: half of the last 16 answers were 429s. A random 10 % of 429s trips that about once in
# 3,000 429s; a real limit (every answer a 429) trips it after 8.
_WINDOW = 16
_STORM = 8


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def parse_duration(text: str | None) -> float | None:
    """OpenAI-style reset durations ('1s', '6m0s', '20ms', '1h2m3.5s') or plain seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def backoff(attempt: int, base_s: float, cap_s: float = 60.0) -> float:
    """Exponential back-off with jitter: half the step fixed, half random, so retries spread out."""
    step = min(cap_s, base_s * 2**attempt)
    return step / 2 + random.uniform(0, step / 2)


class Pace:
    """Spaces units at `per_minute` with one second's worth as a burst (generic cell rate algorithm)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60
        self.tat = 0.0  # theoretical arrival time of the next unit

    def reserve(self, units: float, now: float) -> float:
        """Book `units` now; return how long to wait before using them."""
        self.tat = max(self.tat, now) + units / self.rate
        return max(0.0, self.tat - 1.0 - now)

    def refund(self, units: float) -> None:
        """Give back (or, negative, take) units after the server reported what a request really used."""
        self.tat -= units / self.rate


class Limiter:
    """Shared by all workers of a run: pacing, the gate, and what the server's headers say."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.requests = Pace(rpm) if rpm else None
        self.tokens = Pace(tpm) if tpm else None
        self.gate = 0.0  # monotonic instant before which nothing is sent
        self.pauses = 0  # times the whole run was held back
        self._recent: deque[bool] = deque(maxlen=_WINDOW)

    async def wait(self, tokens: int) -> None:
        """Return when a request estimated at `tokens` may be sent."""
        while True:
            while (d := self.gate - time.monotonic()) > 0:
                await asyncio.sleep(d)
            now, delay = time.monotonic(), 0.0
            if self.requests:
                delay = self.requests.reserve(1, now)
            if self.tokens:
                delay = max(delay, self.tokens.reserve(tokens, now))
            if delay <= 0:
                return
            await asyncio.sleep(delay)
            if self.gate <= time.monotonic():
                return

    def reconcile(self, estimated: int, used: int) -> None:
        """Correct the TPM booking with the usage the server reported."""
        if self.tokens:
            self.tokens.refund(estimated - used)

    def hold(self, until: float) -> None:
        """Close the gate until the monotonic instant `until` (never shortens it)."""
        if until > self.gate:
            self.pauses += self.gate <= time.monotonic()  # a new pause, not an extension
            self.gate = until

    def observe(self, status: int, headers: Mapping[str, str], tokens: int) -> float | None:
        """Learn from one answer; for a retryable one return the earliest instant to retry it."""
        now = time.monotonic()
        limited = status == 429
        self._recent.append(limited)
        exhausted = _exhausted(headers, tokens)
        if exhausted is not None:
            self.hold(now + exhausted)
        wait = retry_after(headers)
        if not limited:
            return None if wait is None else now + wait
        if wait is None:
            wait = exhausted
        instant = None if wait is None else now + wait
        if sum(self._recent) >= _STORM:  # a storm without a stated instant still pauses the run a second
            self.hold(now + 1.0 if instant is None else instant)
        return instant


def _exhausted(headers: Mapping[str, str], tokens: int) -> float | None:
    """Seconds until reset when the server says the request or token budget is used up."""
    waits = []
    for kind, need in (("requests", 1), ("tokens", tokens)):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is None:
            continue
        try:
            if float(remaining) >= need:
                continue
        except ValueError:
            continue
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset:
            waits.append(reset)
    return max(waits) if waits else None
