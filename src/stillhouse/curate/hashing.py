"""Word and n-gram hashes for whole batches of texts, and a compact numpy hash index.

Dedup and decontamination both reduce a text to hashes of its word n-grams. Doing that one text at
a time in Python is what makes such tools slow, so everything here takes a batch: words are hashed
once each with xxh3 (a C call per word), and n-grams are combined from word hashes with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xxhash

# Words are runs of ASCII letters, digits and "_", and of any non-ASCII byte (so accented and
# non-Latin words stay whole); every other byte separates. bytes.translate + split is 3x a regex.
_SEPARATE = bytes(b if chr(b).isalnum() or b == ord("_") or b >= 0x80 else ord(" ") for b in range(256))
_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd, so combining word hashes keeps all their bits in play


def words(text: str) -> list[bytes]:
    """The lowercased words of a text, as UTF-8 bytes (what the hashes are taken over)."""
    return text.lower().encode().translate(_SEPARATE).split()


def token_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """xxh3 of every word of every text, concatenated, and how many words each text has."""
    per_text = [words(t) for t in texts]
    lengths = np.fromiter((len(w) for w in per_text), dtype=np.int64, count=len(per_text))
    flat = [w for ws in per_text for w in ws]
    hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, flat), dtype=np.uint64, count=len(flat))
    return hashes, lengths


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads a combined hash over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(
    hashes: np.ndarray, lengths: np.ndarray, n: int, *, short_whole: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram that lies inside one text, and the index of the text it came from.

    Grams come out grouped by text, in text order. A text with fewer than n words gives one gram over
    all its words when `short_whole` (so short prompts still dedup), and none otherwise.
    """
    total, count = len(hashes), len(lengths)
    owner_of_word = np.repeat(np.arange(count), lengths)
    if total >= n:
        windows = total - n + 1
        grams = hashes[:windows].copy()
        for j in range(1, n):
            grams *= _MUL
            grams += hashes[j : j + windows]
        inside = owner_of_word[:windows] == owner_of_word[n - 1 :]
        grams, owners = grams[inside], owner_of_word[:windows][inside]
    else:
        grams, owners = np.empty(0, np.uint64), np.empty(0, np.int64)
    if short_whole:
        short = np.flatnonzero(lengths < n)
        if len(short):
            starts = np.cumsum(lengths) - lengths
            whole = np.zeros(len(short), np.uint64)
            for j in range(n - 1):
                has = lengths[short] > j
                whole[has] = whole[has] * _MUL + hashes[starts[short[has]] + j]
            order = np.argsort(np.concatenate([owners, short]), kind="stable")
            grams, owners = np.concatenate([grams, whole])[order], np.concatenate([owners, short])[order]
    return mix64(grams), owners


class HashIndex:
    """uint64 key -> uint32 value, open addressing in two numpy arrays, filled in batches.

    12 bytes per slot at a load of 0.25-0.5, so 24-48 bytes per entry, where a dict of Python ints
    takes ~100: at tens of millions of documents times a dozen LSH bands, that difference is what
    fits in memory. Key 0 marks an empty slot, so callers pass non-zero keys.
    """

    def __init__(self, capacity: int = 1 << 16):
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._bits = max(4, (capacity - 1).bit_length())
        self.keys = np.zeros(1 << self._bits, np.uint64)
        self.values = np.zeros(1 << self._bits, np.uint32)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        # Fibonacci hashing: the top bits of key * 2^64/phi spread even keys that differ only in low bits.
        return ((keys * _MUL) >> np.uint64(64 - self._bits)).astype(np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value stored for each key, or -1 where there is none."""
        out = np.full(len(keys), -1, np.int64)
        slots, pending, mask = self._slots(keys), np.arange(len(keys)), (1 << self._bits) - 1
        while len(pending):
            found = self.keys[slots[pending]]
            hit = found == keys[pending]
            out[pending[hit]] = self.values[slots[pending[hit]]]
            pending = pending[~(hit | (found == 0))]
            slots[pending] = (slots[pending] + 1) & mask
        return out

    def put_new(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Store keys that are distinct and not yet present (the caller has checked with `get`)."""
        if 2 * (self.size + len(keys)) > len(self.keys):
            self._grow(self.size + len(keys))
        slots, pending, mask = self._slots(keys), np.arange(len(keys)), (1 << self._bits) - 1
        while len(pending):
            free = pending[self.keys[slots[pending]] == 0]
            taken, first = np.unique(slots[free], return_index=True)  # one key per free slot per round
            self.keys[taken], self.values[taken] = keys[free[first]], values[free[first]]
            placed = np.zeros(len(keys), bool)
            placed[free[first]] = True
            pending = pending[~placed[pending]]
            slots[pending] = (slots[pending] + 1) & mask
        self.size += len(keys)

    def _grow(self, needed: int) -> None:
        old_keys, old_values, capacity = self.keys, self.values, len(self.keys)
        while 2 * needed > capacity:
            capacity *= 2
        self._allocate(capacity)
        for start in range(0, len(old_keys), 1 << 20):  # in chunks, so rehashing needs little beyond both tables
            keys = old_keys[start : start + (1 << 20)]
            live = keys != 0
            self.put_new(keys[live], old_values[start : start + (1 << 20)][live])


def first_seen(index: HashIndex, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For each row of keys (one row per document), the earliest id that had any of its keys.

    Every key is recorded with the first id that had it, documents before this batch and earlier
    rows of this batch alike, so a row whose result is its own id shares no key with anything before.
    """
    rows, width = keys.shape
    flat, owner = keys.ravel(), np.repeat(ids, width)
    stored = index.get(flat)
    new = np.flatnonzero(stored < 0)
    uniq, first, inverse = np.unique(flat[new], return_index=True, return_inverse=True)
    stored[new] = owner[new][first][inverse]  # flat is row-major, so the first occurrence is the earliest id
    index.put_new(uniq, owner[new][first].astype(np.uint32))
    return stored.reshape(rows, width).min(axis=1)
