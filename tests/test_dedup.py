import random

import numpy as np
import pytest
from datasketch.lsh import _optimal_param

from stillhouse.curate.dedup import MinHasher, lsh_params
from stillhouse.curate.hashing import HashIndex, first_seen, ngram_hashes, token_hashes, words


def test_hash_index_grows_and_finds_every_key():
    index = HashIndex(capacity=16)
    keys = np.unique(np.random.default_rng(0).integers(1, 10**9, 50_000, dtype=np.uint64))
    for start in range(0, len(keys), 7_000):
        part = keys[start : start + 7_000]
        index.put_new(part, np.arange(start, start + len(part), dtype=np.uint32))
    assert len(index) == len(keys) and index.nbytes <= 24 * 4 * len(keys)
    assert np.array_equal(index.get(keys), np.arange(len(keys)))
    assert (index.get(np.arange(10**9 + 1, 10**9 + 100, dtype=np.uint64)) == -1).all()


def test_first_seen_names_the_earliest_document_sharing_a_key():
    keys = np.array([[1, 2], [3, 4], [5, 2], [4, 6], [7, 8]], np.uint64)
    index = HashIndex()
    assert first_seen(index, keys[:3], np.arange(3)).tolist() == [0, 1, 0]
    assert first_seen(index, keys[3:], np.arange(3, 5)).tolist() == [1, 4]  # across batches too


def test_ngrams_stay_inside_each_text():
    texts = ["a b c d", "e f", "", "a b c d"]
    hashes, lengths = token_hashes(texts)
    assert lengths.tolist() == [4, 2, 0, 4] and words("Hello, World!") == [b"hello", b"world"]
    grams, owners = ngram_hashes(hashes, lengths, 3)
    assert owners.tolist() == [0, 0, 1, 2, 3, 3]  # short and empty texts give one gram of their own
    assert grams[0] == grams[4] and grams[1] == grams[5] and len(set(grams[:4].tolist())) == 4
    _, strict = ngram_hashes(hashes, lengths, 3, short_whole=False)
    assert strict.tolist() == [0, 0, 3, 3]


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.5, 128), (0.7, 128), (0.8, 128), (0.9, 256)])
def test_lsh_params_agree_with_datasketch(threshold, num_perm):
    assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_minhash_estimates_jaccard_with_the_ideal_spread():
    rng = random.Random(0)
    vocab = [f"v{i}" for i in range(5000)]
    hasher = MinHasher(num_perm=128, ngram=1)
    errors = []
    for _ in range(200):
        a = rng.sample(vocab, 100)
        b = a[:70] + rng.sample(vocab, 30)
        truth = len(set(a) & set(b)) / len(set(a) | set(b))
        sig = hasher.signatures([" ".join(a), " ".join(b)])
        errors.append((sig[0] == sig[1]).mean() - truth)
    ideal = np.sqrt(0.55 * 0.45 / 128)
    assert abs(np.mean(errors)) < 0.01 and np.std(errors) < 1.3 * ideal
