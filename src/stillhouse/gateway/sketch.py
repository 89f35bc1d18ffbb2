"""Prompt sketches: curate's MinHash, with the settings the log and the detector must share.

Templated prompts differ in a few filled slots, so word 3-grams (not curate's 5) keep most of their
shingles in common; 64 permutations estimate Jaccard to about +-0.06, plenty to link a template's
instances. A log kept with hashes only stores these sketches, so detection still works without text.
A detector over millions of prompts hashes them on every core and links them one band at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_all_start_methods, get_context

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stillhouse.curate.dedup import Banding, MinHasher, lsh_params

NUM_PERM = 64
NGRAM = 3
THRESHOLD = 0.5  # estimated Jaccard at which two prompts count as instances of one template
CHUNK = 20_000  # texts per unit of work: bounded memory, and enough units to keep every core busy

_hasher = MinHasher(NUM_PERM, NGRAM, seed=0)
_banding = Banding(*lsh_params(THRESHOLD, NUM_PERM), seed=0)
BANDS = _banding.bands


def sketches(texts: Sequence[str]) -> np.ndarray:
    """One row of NUM_PERM uint32 MinHash values per text."""
    return _hasher.signatures(texts) if len(texts) else np.empty((0, NUM_PERM), np.uint32)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """LSH bucket keys (non-zero uint64), one column per band: sharing any means likely >= THRESHOLD."""
    return _banding.keys(signatures)


_TEXTS: pa.Array | None = None  # the texts being hashed: a forked worker reads its chunk from here, unpickled


def _chunk_keys(bounds: tuple[int, int]) -> np.ndarray:
    assert _TEXTS is not None
    lo, hi = bounds
    return band_keys(sketches(_TEXTS.slice(lo, hi - lo).to_pylist()))


def text_band_keys(texts: pa.Array, workers: int | None = None) -> np.ndarray:
    """Band keys of many texts, CHUNK at a time, on `workers` forked processes (default: every core) when it pays.

    Workers read their chunk straight from the parent's Arrow buffers (fork shares them), so neither the
    texts nor Python strings of them are copied for the workers: millions of prompts fit in memory."""
    global _TEXTS
    bounds = [(i, min(i + CHUNK, len(texts))) for i in range(0, len(texts), CHUNK)]
    out = np.empty((len(texts), BANDS), np.uint64)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, len(bounds)) if "fork" in get_all_start_methods() else 1
    _TEXTS = texts
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) if workers > 1 else nullcontext() as pool:
            parts = pool.map(_chunk_keys, bounds) if pool is not None else map(_chunk_keys, bounds)
            for (lo, hi), part in zip(bounds, parts, strict=True):
                out[lo:hi] = part
    finally:
        _TEXTS = None
    return out


def first_rows(codes: np.ndarray, count: int) -> np.ndarray:
    """The first row holding each of `count` codes (codes < 0 are ignored)."""
    first = np.full(count, len(codes), np.int64)
    valid = np.flatnonzero(codes >= 0)
    np.minimum.at(first, codes[valid], valid)
    return first


def link(keys: np.ndarray) -> np.ndarray:
    """Each row's root: the first row it reaches through shared band keys, rows taken as in time order.

    One band at a time, every row points at the first row that had its key in that band (a hash
    table's pass, in Arrow); the minimum over bands, followed to its end, joins chains of instances."""
    root = np.arange(len(keys))
    for band in range(keys.shape[1]):
        encoded = pc.dictionary_encode(pa.array(keys[:, band]))
        codes = encoded.indices.to_numpy()
        np.minimum(root, first_rows(codes, len(encoded.dictionary))[codes], out=root)
    while not np.array_equal(deeper := root[root], root):
        root = deeper
    return root


def to_bytes(signatures: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in signatures.astype("<u4")]


def from_bytes(blobs: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype="<u4").reshape(len(blobs), NUM_PERM).astype(np.uint32)
