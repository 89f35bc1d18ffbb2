"""Green lists: whether token t is green after context c is a keyed pseudo-random function of (c, t).

Each (context, token) pair is green with probability gamma, independently of every other pair, for any text
that was written without the key; so counting green pairs among distinct pairs is an exact binomial test.
The context is hashed with keyed BLAKE2b; the token is mixed in with the splitmix64 finaliser, vectorised, so a
whole vocabulary's green list costs one hash and a few numpy operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from stillhouse.forensics.key import WatermarkKey

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def p_text(p: float) -> str:
    """A p-value as people read it: three decimals, or one significant digit below 0.001 (4e-10)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def context_seed(key: WatermarkKey, context: Sequence[int]) -> int:
    """64 keyed pseudo-random bits for a context window (token ids)."""
    data = b"".join(int(t).to_bytes(4, "little", signed=False) for t in context)
    return int.from_bytes(hashlib.blake2b(data, key=key.secret[:64], digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _threshold(gamma: float) -> np.uint64:
    return np.uint64(min(int(gamma * 2**64), 2**64 - 1))


def green_mask(key: WatermarkKey, context: Sequence[int], vocab_size: int) -> np.ndarray:
    """Boolean [vocab_size]: the green list after this context."""
    seed = np.uint64(context_seed(key, context))
    tokens = np.arange(vocab_size, dtype=np.uint64)
    return _mix(seed ^ (tokens * _GOLDEN)) < _threshold(key.gamma)


def is_green(key: WatermarkKey, contexts: Sequence[Sequence[int]], tokens: Sequence[int]) -> np.ndarray:
    """Boolean per (context, token) pair."""
    seeds = np.fromiter((context_seed(key, c) for c in contexts), dtype=np.uint64, count=len(contexts))
    return _mix(seeds ^ (np.asarray(tokens, dtype=np.uint64) * _GOLDEN)) < _threshold(key.gamma)
