"""`stillhouse detect` at volume: the whole detector on a 16M-row log (target: <= 10 min on 2 cores).

The log is the `volume` scenario (`stillhouse simulate --scenario volume`, simulated once and kept under
--work): 10M campaign exchanges over 24,000 accounts, the scale Anthropic reported, among 40,000 benign
accounts over 14 days, every prompt generated afresh (no row is a copy, so nothing is deduplicated away
that a real log would keep). Timed: `detect(LOG)` from the Parquet segments to the scored accounts and
clusters, DuckDB and the MinHash workers on every core; its phases are printed, then the detection
quality on that log (ROC-AUC, recall at 0.1 % FPR, cluster ARI, as bench/detect.py computes them).

    PYTHONPATH=src python bench/detect_scale.py              # simulating writes ~2 GB under /tmp, once
    PYTHONPATH=src python bench/detect_scale.py --scale 0.1  # a 1.6M-row version of the same
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from stillhouse.gateway.detect import detect
from stillhouse.gateway.simulate import read_labels, scenario, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/stillhouse-bench-scale"))
    parser.add_argument("--scale", type=float, default=1.0, help="scale the volume scenario's accounts and volume")
    args = parser.parse_args()
    log = args.work / f"volume-x{args.scale:g}"
    if not log.exists():
        started = time.perf_counter()
        counts = simulate(scenario("volume", scale=args.scale), log)
        print(f"simulated {counts['rows']:,} requests in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    result = detect(log)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result.phases.items())
    print(f"{result.rows:,} requests, {len(result.accounts):,} accounts: detect in {seconds:.0f} s "
          f"(target <= 600 s; {phases}); peak RSS {peak:.1f} GiB")  # fmt: skip
    labels = read_labels(log)
    keys = [a.account for a in result.accounts]
    y = np.array([labels[k] is not None for k in keys])
    s = np.array([a.score for a in result.accounts])
    threshold = np.quantile(s[~y], 0.999)
    clusters = {a: c.id for c in result.clusters for a in c.accounts}
    truth = [labels[k] or f"b{i}" for i, k in enumerate(keys)]
    found = [str(clusters[k]) if k in clusters else f"s{i}" for i, k in enumerate(keys)]
    print(f"AUC {roc_auc_score(y, s):.3f}, recall at 0.1 % FPR {(s[y] > threshold).mean():.1%}, "
          f"flagged {sum(a.flagged for a in result.accounts):,} ({int(y.sum()):,} campaign accounts), "
          f"cluster ARI {adjusted_rand_score(truth, found):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
