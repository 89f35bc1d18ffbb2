"""Near-dedup quality and speed, stillhouse vs datasketch, and whole-pipeline curate throughput.

    PYTHONPATH=src python bench/curate.py                     # 200k docs, 1M-exchange pipeline
    PYTHONPATH=src python bench/curate.py --docs 50000 --exchanges 100000

Corpus: Zipfian pseudo-words, 60-140 words per document. 12 % of documents copy an earlier one
with 0-4 word substitutions (true 5-gram Jaccard mostly 0.65-1.0), 4 % splice a third of an earlier
one into new text (hard negatives). A copy is a true duplicate when its exact Jaccard with its source
reaches the threshold; true clusters join those pairs. A method flags a document with the earliest
earlier document it collides with; a flag is right when both are in one true cluster.

Both methods use the same words, 5-gram shingles, 128 permutations and the same (bands, rows), and
the same stream semantics: every document's band keys are recorded, a document is a duplicate when
any key was seen before. datasketch runs as MinHash.update_batch + MinHashLSH query/insert, with its
default sha1 hash and with xxh32 (its fastest pure-Python configuration). Each method runs in its
own process, so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THRESHOLD, NUM_PERM, NGRAM, BATCH = 0.8, 128, 5, 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_corpus(n: int, path: Path, seed: int = 0) -> np.ndarray:
    """Write n documents, one per line; return each document's true cluster id."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:x}" for i in range(50_000)])
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1) ** 1.05)
    cdf /= cdf[-1]

    def draw(k: int) -> list[str]:
        return list(vocab[np.minimum(np.searchsorted(cdf, rng.random(k)), len(vocab) - 1)])

    cluster = np.arange(n)
    recent: list[tuple[int, list[str]]] = []  # a window of earlier originals to copy from
    with path.open("w") as f:
        for i in range(n):
            kind = rng.random()
            if kind < 0.16 and recent:
                src, words = recent[rng.integers(len(recent))]
                if kind < 0.12:  # near copy: a few substituted words
                    doc = list(words)
                    for pos in rng.integers(0, len(doc), rng.integers(0, 5)):
                        doc[pos] = draw(1)[0]
                    if jaccard(doc, words) >= THRESHOLD:
                        cluster[i] = cluster[src]
                else:  # splice: a third of an earlier document inside new text
                    third = len(words) // 3
                    doc = [*draw(40), *words[:third], *draw(40)]
            else:
                doc = draw(int(rng.integers(60, 141)))
                recent.append((i, doc))
                if len(recent) > 5000:
                    recent.pop(0)
            f.write(" ".join(doc) + "\n")
    return cluster


def jaccard(a: list[str], b: list[str]) -> float:
    sa = {tuple(a[i : i + NGRAM]) for i in range(len(a) - NGRAM + 1)}
    sb = {tuple(b[i : i + NGRAM]) for i in range(len(b) - NGRAM + 1)}
    return len(sa & sb) / len(sa | sb)


def lines(path: Path):
    with path.open() as f:
        for line in f:
            yield line.rstrip("\n")


def run_ours(path: Path) -> tuple[np.ndarray, dict]:
    from stillhouse.curate.dedup import Banding, MinHasher, lsh_params
    from stillhouse.curate.hashing import HashIndex, first_seen

    hasher, banding, index = MinHasher(NUM_PERM, NGRAM), Banding(*lsh_params(THRESHOLD, NUM_PERM)), HashIndex()
    partners, batch, seen = [], [], 0
    for text in lines(path):
        batch.append(text)
        if len(batch) == BATCH:
            ids = np.arange(seen, seen + len(batch))
            partners.append(first_seen(index, banding.keys(hasher.signatures(batch)), ids))
            seen, batch = seen + len(batch), []
    if batch:
        partners.append(first_seen(index, banding.keys(hasher.signatures(batch)), np.arange(seen, seen + len(batch))))
    roots = np.concatenate(partners)
    return np.where(roots < np.arange(len(roots)), roots, -1), {"index_mb": index.nbytes / 2**20}


def run_datasketch(path: Path, hashfunc: str) -> tuple[np.ndarray, dict]:
    import xxhash
    from datasketch import MinHash, MinHashLSH

    from stillhouse.curate.dedup import lsh_params
    from stillhouse.curate.hashing import words

    lsh = MinHashLSH(num_perm=NUM_PERM, params=lsh_params(THRESHOLD, NUM_PERM))
    base = MinHash(num_perm=NUM_PERM, **({"hashfunc": xxhash.xxh32_intdigest} if hashfunc == "xxh32" else {}))
    partners = []
    for i, text in enumerate(lines(path)):
        w = words(text)
        m = base.copy()
        m.update_batch([b" ".join(w[j : j + NGRAM]) for j in range(max(1, len(w) - NGRAM + 1))])
        found = lsh.query(m)
        partners.append(min(found) if found else -1)
        lsh.insert(i, m)
    return np.array(partners), {}


def run_curate(run: Path, out: Path) -> tuple[np.ndarray, dict]:
    from stillhouse.curate import curate

    result = curate([run], out)
    dropped = {k: sum(v.values()) for k, v in result.dropped.items() if sum(v.values())}
    return np.empty(0), {"rows": sum(result.rows.values()), "dropped": dropped}


def worker(method: str, corpus: Path, out: Path) -> None:
    base = peak_rss_mb()
    start = time.perf_counter()
    if method == "pipeline":
        partners, extra = run_curate(corpus, out.with_suffix(""))
    elif method == "stillhouse":
        partners, extra = run_ours(corpus)
    else:
        partners, extra = run_datasketch(corpus, method.split("-")[1])
    seconds = time.perf_counter() - start
    np.save(out, partners)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_at_start_mb": base, **extra}))


def score(partners: np.ndarray, cluster: np.ndarray) -> dict[str, float]:
    _, first = np.unique(cluster, return_index=True)
    should_drop = np.ones(len(cluster), bool)
    should_drop[first] = False
    flagged = partners >= 0
    right = flagged & (cluster[np.maximum(partners, 0)] == cluster)
    tp, fp = int(right.sum()), int((flagged & ~right).sum())
    precision, recall = tp / max(1, tp + fp), tp / max(1, int(should_drop.sum()))
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(1e-12, precision + recall)}


def run_method(method: str, corpus: Path, tmp: Path) -> dict:
    out = tmp / f"{method}.npy"
    cmd = [sys.executable, __file__, "--worker", method, "--corpus", str(corpus), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    return {**stats, "partners": np.load(out)}


def dedup_bench(n: int, tmp: Path) -> None:
    corpus = tmp / f"corpus-{n}.txt"
    t = time.perf_counter()
    cluster = make_corpus(n, corpus)
    _, first = np.unique(cluster, return_index=True)
    print(f"corpus: {n:,} docs, {n - len(first):,} true near-duplicates, made in {time.perf_counter() - t:.0f}s")
    print(f"{'method':<22}{'precision':>10}{'recall':>8}{'F1':>8}{'docs/s':>10}{'peak RSS MB':>13}{'index MB':>10}")
    results = {}
    for method in ("stillhouse", "datasketch-sha1", "datasketch-xxh32"):
        r = run_method(method, corpus, tmp)
        q = score(r["partners"], cluster)
        results[method] = {**r, **q, "docs_s": n / r["seconds"]}
        index = f"{r['index_mb']:.0f}" if "index_mb" in r else "-"
        print(
            f"{method:<22}{q['precision']:>10.4f}{q['recall']:>8.4f}{q['f1']:>8.4f}"
            f"{n / r['seconds']:>10,.0f}{r['peak_rss_mb']:>13,.0f}{index:>10}"
        )
    ours = results["stillhouse"]
    for peer in ("datasketch-sha1", "datasketch-xxh32"):
        p = results[peer]
        print(
            f"stillhouse / {peer}: {ours['docs_s'] / p['docs_s']:.1f}x docs/s, "
            f"F1 {ours['f1']:.4f} vs {p['f1']:.4f}, peak RSS {ours['peak_rss_mb'] / p['peak_rss_mb']:.2f}x"
        )
    quarter = tmp / f"corpus-{n // 4}.txt"
    make_corpus(n // 4, quarter)
    small = run_method("stillhouse", quarter, tmp)
    rest = [r["peak_rss_mb"] - r["index_mb"] for r in (small, ours)]
    print(
        f"memory: stillhouse peak RSS {small['peak_rss_mb']:.0f} MB at {n // 4:,} docs (LSH index "
        f"{small['index_mb']:.0f} MB), {ours['peak_rss_mb']:.0f} MB at {n:,} (index {ours['index_mb']:.0f} MB); "
        f"RSS less index {rest[0]:.0f} -> {rest[1]:.0f} MB"
    )


def pipeline_bench(n: int, tmp: Path) -> None:
    """Build a run store of n exchanges (answers from the generated corpus) and time `curate` on it."""
    from stillhouse.collect.store import Exchange, RunStore
    from stillhouse.core.ids import now

    corpus = tmp / f"answers-{n}.txt"
    make_corpus(n, corpus, seed=1)
    run = tmp / f"run-{n}"
    t = time.perf_counter()
    with RunStore(run) as store:
        chunk = []
        for i, answer in enumerate(lines(corpus)):
            messages = [{"role": "user", "content": f"Tell me about topic {i % (n // 2)} in detail."}]
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            if i % 50 == 0:
                choice["finish_reason"] = "length"
            response = {"id": f"c{i}", "object": "chat.completion", "model": "m", "choices": [choice]}
            chunk.append(
                Exchange(
                    f"k{i}", f"p{i}", 0, {"model": "m", "messages": messages}, "ok", "collect-bench", now(), response
                )
            )
            if len(chunk) == 20_000:
                store.put_many(chunk)
                chunk = []
        store.put_many(chunk)
    size = (run / "store.sqlite").stat().st_size / 2**30
    print(f"pipeline: run store of {n:,} exchanges ({size:.2f} GiB) built in {time.perf_counter() - t:.0f}s")
    r = run_method("pipeline", run, tmp)
    dropped = ", ".join(f"{k} {v:,}" for k, v in r["dropped"].items())
    print(
        f"pipeline: curate {n:,} exchanges -> {r['rows']:,} rows in {r['seconds']:.0f}s = "
        f"{n / r['seconds']:,.0f} exchanges/s, peak RSS {r['peak_rss_mb']:,.0f} MB ({dropped})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000, help="0 skips the near-dedup benchmark")
    ap.add_argument("--exchanges", type=int, default=1_000_000, help="0 skips the pipeline benchmark")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.corpus, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        if args.docs:
            dedup_bench(args.docs, Path(tmp))
        if args.exchanges:
            pipeline_bench(args.exchanges, Path(tmp))


if __name__ == "__main__":
    main()
