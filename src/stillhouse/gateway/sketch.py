"""Prompt sketches: curate's MinHash, with the settings the log and the detector must share.

Templated prompts differ in a few filled slots, so word 3-grams (not curate's 5) keep most of their
shingles in common; 64 permutations estimate Jaccard to about +-0.06, plenty to link a template's
instances. A log kept with hashes only stores these sketches, so detection still works without text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stillhouse.curate.dedup import Banding, MinHasher, lsh_params

NUM_PERM = 64
NGRAM = 3
THRESHOLD = 0.5  # estimated Jaccard at which two prompts count as instances of one template

_hasher = MinHasher(NUM_PERM, NGRAM, seed=0)
_banding = Banding(*lsh_params(THRESHOLD, NUM_PERM), seed=0)


def sketches(texts: Sequence[str]) -> np.ndarray:
    """One row of NUM_PERM uint32 MinHash values per text."""
    return _hasher.signatures(texts) if len(texts) else np.empty((0, NUM_PERM), np.uint32)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """LSH bucket keys (non-zero uint64), one column per band: sharing any means likely >= THRESHOLD."""
    return _banding.keys(signatures)


def to_bytes(signatures: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in signatures.astype("<u4")]


def from_bytes(blobs: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype="<u4").reshape(len(blobs), NUM_PERM).astype(np.uint32)
