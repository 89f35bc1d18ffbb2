"""Extraction detection on simulated traffic: stillhouse's detector against PRADA, a SEAT-style counter and window MMD.

Per scenario (`stillhouse.gateway.simulate`), every method scores every account of the same log:

- stillhouse: `stillhouse.gateway.detect` (features + accounts linked into campaigns), with the simulated
  billing data (accounts.jsonl: payment instruments) and, as "log only", from the request log alone.
- PRADA (Juuti et al. 2019): per account, the minimum distance of each query to the account's earlier ones;
  the Shapiro-Wilk W of those distances (score 1 - W); needs 20 queries, so smaller accounts score 0.
- SEAT-style (Zhang et al. 2021): per account, the number of near-duplicate query pairs (cosine >= 0.8).
- window MMD (after Liu et al. 2026): per account, MMD^2 (RBF kernel) between its latest <= 1,500 queries and
  a reference window of 1,500 queries drawn from the whole log (unlabelled, so campaign traffic is in it).

Queries are hashed word 1-2-gram TF vectors (PRADA and SEAT use model embeddings; no encoder is downloadable
here), reduced to 64 dimensions for MMD. Figures: account ROC-AUC; recall at 0.1 % FPR (threshold: the 99.9th
percentile of benign accounts' scores, an oracle threshold that favours every method equally); cluster ARI
(stillhouse only: the others do not cluster); campaign exchanges sent before the first campaign account
passes that threshold, replaying the log's prefixes.

    PYTHONPATH=src nice -n 10 python bench/detect.py                       # every scenario, ~20 min on 2 cores
    PYTHONPATH=src python bench/detect.py --scenarios single,split-100 --scale 0.5
    PYTHONPATH=src python bench/detect.py --methods "stillhouse,stillhouse (log only)"
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.stats import shapiro
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from stillhouse.gateway.detect import detect, load, read_accounts
from stillhouse.gateway.log import ACCOUNTS
from stillhouse.gateway.simulate import SCENARIOS, read_labels, scenario, simulate

_VEC = HashingVectorizer(ngram_range=(1, 2), n_features=1 << 18, alternate_sign=False, norm="l2")
MAX_PER_ACCOUNT = 500  # PRADA and SEAT look at an account's latest 500 queries (quadratic in them)


def _by_account(table: pa.Table) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, key in enumerate(table.column("key_id").to_pylist()):
        out.setdefault(key, []).append(i)
    return out


def prada(table: pa.Table, vectors) -> dict[str, float]:
    scores = {}
    for key, rows in _by_account(table).items():
        rows = rows[-MAX_PER_ACCOUNT:]
        if len(rows) < 20:
            scores[key] = 0.0
            continue
        x = vectors[rows]
        sq = np.clip(2 - 2 * (x @ x.T).toarray(), 0, None)  # unit vectors: squared distance
        np.fill_diagonal(sq, np.inf)
        mins = np.sqrt(np.array([sq[i, :i].min() for i in range(1, len(rows))]))
        scores[key] = 0.0 if np.ptp(mins) == 0 else 1.0 - float(shapiro(mins).statistic)
    return scores


def seat(table: pa.Table, vectors) -> dict[str, float]:
    scores = {}
    for key, rows in _by_account(table).items():
        x = vectors[rows[-MAX_PER_ACCOUNT:]]
        sim = (x @ x.T).toarray()
        scores[key] = float((np.triu(sim, 1) >= 0.8).sum())
    return scores


def mmd(table: pa.Table, vectors, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    svd = TruncatedSVD(64, random_state=seed).fit(vectors[rng.choice(vectors.shape[0], 20_000)])
    dense = svd.transform(vectors)
    reference = dense[rng.choice(len(dense), min(1_500, len(dense)), replace=False)]
    gamma = 1.0 / np.median(np.sum((reference[:200, None] - reference[None, :200]) ** 2, -1) + 1e-12)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-gamma * (np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T))

    kyy = k(reference, reference)
    yy = (kyy.sum() - np.trace(kyy)) / (len(reference) * (len(reference) - 1))
    to_reference = np.concatenate([k(dense[i : i + 4096], reference).mean(1) for i in range(0, len(dense), 4096)])
    scores = {}
    for key, rows in _by_account(table).items():
        rows = rows[-1_500:]
        kxx = k(dense[rows], dense[rows])
        xx = (kxx.sum() - np.trace(kxx)) / max(1, len(rows) * (len(rows) - 1))
        scores[key] = float(xx + yy - 2 * to_reference[rows].mean())
    return scores


BASELINES: dict[str, Callable] = {"PRADA": prada, "SEAT-style": seat, "window MMD": mmd}


def _metrics(scores: dict[str, float], labels: dict[str, str | None]) -> tuple[float, float]:
    keys = [k for k in labels if k in scores]
    y = np.array([labels[k] is not None for k in keys])
    s = np.array([scores[k] for k in keys])
    if y.all() or not y.any():
        return float("nan"), float("nan")
    threshold = np.quantile(s[~y], 0.999)
    return float(roc_auc_score(y, s)), float((s[y] > threshold).mean())


def _first_detection(method: Callable, table: pa.Table, vectors, labels: dict, fractions: list[float]) -> str | None:
    """Campaign exchanges in the shortest log prefix where the method first passes the 0.1 % FPR threshold."""
    ts = table.column("ts").to_numpy()
    campaign = np.array([labels.get(k) is not None for k in table.column("key_id").to_pylist()])
    for f in fractions:  # prefixes shorter than the whole log; None when only the whole log detects
        n = int(np.searchsorted(ts, ts[0] + f * (ts[-1] - ts[0]), "right"))
        _, recall = _metrics(method(table.slice(0, n), vectors[:n]), labels)
        if recall > 0:
            return f"{int(campaign[:n].sum()):,}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", default=",".join(s for s in SCENARIOS if s not in ("tiny", "benign", "volume"))
    )  # volume: bench/detect_scale.py
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/stillhouse-bench-detect"))
    parser.add_argument("--fractions", default="0.05,0.1,0.25,0.5", help="log prefixes tried for first detection")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{'scenario':<14} {'method':<22} {'AUC':>6} {'rec@0.1%':>9} {'ARI':>6} {'to detect':>10} {'s':>6}")
    for name in args.scenarios.split(","):
        sc = scenario(name, scale=args.scale)
        out = args.work / f"{name}-x{args.scale:g}"
        if not out.exists():
            simulate(sc, out)
        labels = read_labels(out)
        table = load(out)
        campaign_rows = sum(labels.get(k) is not None for k in table.column("key_id").to_pylist())
        vectors = _VEC.transform([p or "" for p in table.column("prompt").to_pylist()]).tocsr()  # for the baselines
        billing = read_accounts(out / ACCOUNTS) if (out / ACCOUNTS).exists() else None
        methods: dict[str, Callable] = {
            "stillhouse": lambda t, v, a=billing: {x.account: x.score for x in detect(t, accounts=a).accounts},
            "stillhouse (log only)": lambda t, v: {x.account: x.score for x in detect(t).accounts},
            **BASELINES,
        }
        for method_name, method in methods.items():
            if args.methods and method_name not in args.methods.split(","):
                continue
            started = time.perf_counter()
            if method_name.startswith("stillhouse"):
                result = detect(table, accounts=billing if method_name == "stillhouse" else None)
                scores = {a.account: a.score for a in result.accounts}
                clusters = {a: c.id for c in result.clusters for a in c.accounts}
                keys = sorted(labels)
                truth = [labels[k] or f"b{i}" for i, k in enumerate(keys)]
                found = [str(clusters[k]) if k in clusters else f"s{i}" for i, k in enumerate(keys)]
                ari = f"{adjusted_rand_score(truth, found):.3f}" if sum(map(bool, labels.values())) > 1 else "-"
            else:
                scores, ari = method(table, vectors), "-"
            seconds = time.perf_counter() - started
            auc, recall = _metrics(scores, labels)
            first = "never"  # a method that misses on the whole log is not run on its prefixes
            if recall > 0:
                first = _first_detection(method, table, vectors, labels, fractions) or f"{campaign_rows:,}"
            print(
                f"{name:<14} {method_name:<22} {auc:>6.3f} {recall:>9.1%} {ari:>6} {first:>10} {seconds:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
