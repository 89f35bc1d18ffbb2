"""Per-key request and token limits: a token bucket per key that holds one minute's allowance.

A request is admitted when the request bucket has one unit and the token bucket has room for the
prompt's estimated tokens; the answer's real usage is charged afterwards, so a long answer can take
the token bucket below zero and the next request waits for it to refill. A refusal says when to come
back (Retry-After), which is exactly when the bucket will have enough.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from stillhouse.gateway.keys import Key


class Bucket:
    """`per_minute` units, refilled continuously, at most one minute's worth banked."""

    def __init__(self, per_minute: int, now: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level, self.at = self.capacity, now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait(self, units: float, now: float) -> float:
        """Seconds until `units` are available (0 when they are now); asks at most a full bucket."""
        self._refill(now)
        return max(0.0, (min(units, self.capacity) - self.level) / self.rate)

    def take(self, units: float, now: float) -> None:
        self._refill(now)
        self.level -= units

    def remaining(self) -> int:
        return max(0, math.floor(self.level))


@dataclass
class Verdict:
    """Whether a request may go, and the x-ratelimit-* / Retry-After headers to send either way."""

    ok: bool
    retry_after: float
    headers: dict[str, str]
    which: str = ""  # "requests" or "tokens" when refused


class Limits:
    """The buckets of every key seen so far, created on first use from the key's rpm/tpm."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[Bucket | None, Bucket | None]] = {}

    def _for(self, key: Key, now: float) -> tuple[Bucket | None, Bucket | None]:
        buckets = self._buckets.get(key.id)
        if buckets is None:
            buckets = (Bucket(key.rpm, now) if key.rpm else None, Bucket(key.tpm, now) if key.tpm else None)
            self._buckets[key.id] = buckets
        return buckets

    def admit(self, key: Key, tokens: int, now: float | None = None) -> Verdict:
        """Take one request (and check room for `tokens`) from the key's allowance, or say how long to wait."""
        now = time.monotonic() if now is None else now
        requests, budget = self._for(key, now)
        waits = {
            "requests": requests.wait(1, now) if requests else 0.0,
            "tokens": budget.wait(tokens, now) if budget else 0.0,
        }
        which = max(waits, key=waits.__getitem__)
        retry = waits[which]
        if retry <= 0 and requests:
            requests.take(1, now)
        headers = _headers(key, requests, budget)
        if retry > 0:
            headers["Retry-After"] = str(max(1, math.ceil(retry)))
            headers["retry-after-ms"] = str(math.ceil(retry * 1000))
            return Verdict(False, retry, headers, which)
        return Verdict(True, 0.0, headers)

    def charge(self, key: Key, tokens: int) -> None:
        """Charge the tokens a request really used (prompt + completion) once the answer is in."""
        _, budget = self._for(key, time.monotonic())
        if budget and tokens:
            budget.take(tokens, time.monotonic())


def _headers(key: Key, requests: Bucket | None, budget: Bucket | None) -> dict[str, str]:
    headers = {}
    for kind, limit, bucket in (("requests", key.rpm, requests), ("tokens", key.tpm, budget)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
            headers[f"x-ratelimit-reset-{kind}"] = f"{(bucket.capacity - bucket.level) / bucket.rate:.3f}s"
    return headers
