"""collect_bench driver: stillhouse's Python API, `stillhouse.collect(...)`, as a real run uses it.

The prompts go through a JSONL file (written before the clock starts, streamed by collect), the
answers are committed to the run's SQLite store and ledger, and the driver reads them back from
that store, so the figures include everything a real run pays for. Concurrency = collect's
`concurrency` (its own pool of C workers); retries are collect's (`max_retries`).

    python bench/drive_stillhouse.py --n 2000 --concurrency 64 --port 8765
The shared harness (common.py) is found at ../shared/bench/collect_bench from the repository root,
or wherever COLLECT_BENCH_DIR points.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("COLLECT_BENCH_DIR", str(ROOT.parent / "shared" / "bench" / "collect_bench")))
sys.path.insert(0, str(ROOT / "src"))

from common import MODEL, Bench, parse_args, prompt  # noqa: E402

import stillhouse  # noqa: E402
from stillhouse import RunStore, collect  # noqa: E402


def write_prompts(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "prompt": prompt(i)}) + "\n")


def stored(run_dir: Path):
    """(i, text or None, error or None) per stored exchange, streamed from the store."""
    with RunStore(run_dir, create=False) as store:
        for e in store.exchanges(status=None):
            yield int(e.prompt_id), (e.texts() or [None])[0], e.error


if __name__ == "__main__":
    args = parse_args("stillhouse")
    os.makedirs(args.workdir, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stillhouse-", dir=args.workdir))
    prompts = work / "prompts.jsonl"
    write_prompts(prompts, args.n)
    bench = Bench(args)
    with bench.timed():
        result = collect(
            prompts,
            base_url=args.base_url,
            model=MODEL,
            out=work / "run",
            purpose="evaluation",
            api_key_env=None,
            concurrency=args.concurrency,
            max_tokens=128,
            max_retries=args.max_retries,
        )
    bench.finish(
        stored(work / "run"),
        {"version": stillhouse.__version__, "stop_reason": result.stop_reason, "retries": result.retries},
    )
    shutil.rmtree(work)
