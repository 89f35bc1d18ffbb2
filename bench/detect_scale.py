"""The detector's per-account analytics in DuckDB on a 16M-row Parquet log (target: <= 10 min on 2 cores).

The log is the `hard` scenario's (simulated once) copied `--copies` times with the accounts renamed per copy
and time shifted, so the account count grows with the rows (21,000 accounts per copy) and nothing is
deduplicated away. Timed: the feature query `stillhouse.gateway.detect` runs (volume, gaps and their
regularity, source sharing, logprobs, answer length, chain-of-thought and coding regexes over every
prompt, the newest model's adoption) over the Parquet files, with DuckDB on 2 threads. Not timed here: the
MinHash and linking steps, which run in numpy on the requests that DuckDB hands over.

    PYTHONPATH=src nice -n 10 python bench/detect_duckdb.py            # writes ~1.5 GB under /tmp
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb
import numpy as np

from stillhouse.gateway.detect import account_features
from stillhouse.gateway.simulate import scenario, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/stillhouse-bench-duckdb"))
    parser.add_argument("--copies", type=int, default=50, help="copies of the hard log (~322k rows each)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    source = args.work / "hard"
    if not source.exists():
        simulate(scenario("hard"), source)
    big = args.work / f"x{args.copies}"
    con = duckdb.connect()
    con.sql(f"SET threads = {args.threads}")
    if not big.exists():
        big.mkdir(parents=True)
        started = time.perf_counter()
        for c in range(args.copies):
            con.sql(
                f"COPY (SELECT * REPLACE (key_id || '-{c}' AS key_id, ts + {c} * 1e-3 AS ts) "
                f"FROM read_parquet('{source}/segments/*.parquet')) TO '{big}/part-{c:04d}.parquet' "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        print(f"wrote {args.copies} copies in {time.perf_counter() - started:.0f} s")
    con.sql(
        f"CREATE VIEW req AS SELECT ts, key_id, source, model, logprobs, prompt, prompt_tokens, completion_tokens, "
        f"false AS shared, false AS sync FROM read_parquet('{big}/*.parquet') WHERE key_id IS NOT NULL"
    )
    rows = con.sql("SELECT count(*) FROM req").fetchall()[0][0]
    started = time.perf_counter()
    names = np.array([k for (k,) in con.sql("SELECT DISTINCT key_id FROM req").fetchall()], dtype=object)
    features = account_features(con, names)
    seconds = time.perf_counter() - started
    print(f"{rows:,} rows, {len(names):,} accounts: per-account features in {seconds:.0f} s on {args.threads} threads "
          f"({rows / seconds / 1e6:.2f}M rows/s; target 16M rows in <= 600 s); {len(features)} features")  # fmt: skip


if __name__ == "__main__":
    main()
