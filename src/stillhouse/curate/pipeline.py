"""`curate`: run stores and exports in, a documented chat dataset out, streamed in batches.

Examples flow through small steps (filters, decontamination, exact and near dedup), each counting
what it drops. Output goes to a temporary directory renamed into place at the end, so a failure
leaves nothing half-written; the ledger records the run, its inputs and the dataset's content hash.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import new_run_id, operator
from stillhouse.curate import card
from stillhouse.curate.decontam import Decontaminate, EvalSet
from stillhouse.curate.dedup import ExactDedup, Keep, NearDedup
from stillhouse.curate.example import Example, Step, Target
from stillhouse.curate.filters import Empty, Failed, Length, Refusal, Repetition, Truncated, tokenizer_counter
from stillhouse.curate.sources import open_sources
from stillhouse.curate.writer import SCHEMA, DatasetWriter, Format, content_hash, split_of, to_table
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger, ledger_path

FILTERS = ("failed", "empty", "truncated", "refusal", "length", "repetition")
BATCH = 1024


@dataclass
class CurateConfig:
    """Every knob of a curation run; recorded whole in the ledger."""

    skip: tuple[str, ...] = ()  # filters switched off, by name
    refusal_patterns: tuple[str, ...] = ()  # regular expressions added to the default list
    min_tokens: int = 0
    max_tokens: int | None = None
    tokenizer: str | None = None  # a tokenizer directory; else lengths are estimated
    repetition_ngram: int = 3
    max_repetition: float = 0.5
    exact_dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = 0.8
    near_ngram: int = 5
    num_perm: int = 128
    dedup_on: Target = "both"
    keep: Keep = "first"
    score: str = "logprob"  # what keep="best" ranks by: the answer's mean logprob, or a numeric meta field
    decontam_ngram: int = 13
    validation: float = 0.0  # share of prompts held out as a validation split
    format: Format = "parquet"
    shard_rows: int = 100_000
    seed: int = 0

    def validate(self) -> None:
        problems = [f"unknown filter '{s}' (filters: {', '.join(FILTERS)})" for s in self.skip if s not in FILTERS]
        if not 0 < self.near_threshold < 1:
            problems.append("the near-dedup threshold must be between 0 and 1")
        if not 0 <= self.validation < 1:
            problems.append("the validation share must be in [0, 1)")
        if min(self.near_ngram, self.decontam_ngram, self.repetition_ngram, self.num_perm, self.shard_rows) < 1:
            problems.append("n-gram sizes, num_perm and shard rows must be positive")
        if self.dedup_on not in ("prompt", "answer", "both") or self.keep not in ("first", "best"):
            problems.append("dedup target must be prompt, answer or both, and keep first or best")
        if self.format not in ("parquet", "jsonl"):
            problems.append("format must be parquet or jsonl")
        if problems:
            raise StillhouseError("; ".join(problems))


@dataclass
class CurateResult:
    out: Path
    run_id: str
    ledger: Path
    read: int
    rows: dict[str, int]
    dropped: dict[str, dict[str, int]]
    content_hash: str
    files: dict[str, str] = field(default_factory=dict)


def build_steps(config: CurateConfig, evals: Sequence[EvalSet]) -> list[Step]:
    """Filters first (cheap), then decontamination (so a contaminated example counts there even when
    duplicated, and never wins a dedup cluster), then exact and near dedup."""
    count = tokenizer_counter(config.tokenizer) if config.tokenizer else None
    filters: dict[str, Step] = {
        "failed": Failed(),
        "empty": Empty(),
        "truncated": Truncated(),
        "refusal": Refusal(config.refusal_patterns),
        "length": Length(config.min_tokens, config.max_tokens, count),
        "repetition": Repetition(config.repetition_ngram, config.max_repetition),
    }
    steps = [f for name, f in filters.items() if name not in config.skip]
    if evals:
        steps.append(Decontaminate(evals, config.decontam_ngram))
    if config.exact_dedup:
        steps.append(ExactDedup(config.keep, config.score))
    if config.near_dedup:
        steps.append(
            NearDedup(
                config.near_threshold,
                config.near_ngram,
                config.num_perm,
                config.dedup_on,
                config.keep,
                config.score,
                config.seed,
            )
        )
    return steps


def _batches(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _check_output(out: Path, overwrite: bool, inputs: Sequence[Path]) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        what = "already holds a dataset" if (out / "README.md").exists() or (out / "data").exists() else "is not empty"
        raise StillhouseError(f"{out} {what}; pass --overwrite to replace it, or choose another directory")
    if any(p.resolve().is_relative_to(out.resolve()) for p in inputs):
        raise StillhouseError(f"{out} contains an input; --overwrite would delete it, choose another directory")


def _replace(staging: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}") if out.exists() else None
    if old:
        out.rename(old)
    staging.rename(out)
    if old:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


class _Run:
    """One pass of examples through the steps, counting every drop."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = steps
        self.dropped: dict[str, Counter[str]] = {s.name: Counter() for s in steps}
        self.read = 0
        self.sources: Counter[str] = Counter()

    def __call__(self, examples: Iterable[Example]) -> Iterator[list[Example]]:
        for batch in _batches(examples, BATCH):
            for e in batch:
                e.seq, self.read = self.read, self.read + 1
                self.sources[e.source] += 1
            for step in self.steps:
                kept = []
                for e, reason in zip(batch, step.check(batch), strict=True):
                    if reason is None:
                        kept.append(e)
                    else:
                        self.dropped[step.name][reason] += 1
                batch = kept
                if not batch:
                    break
            yield batch


def _write_split(writer: DatasetWriter, batch: Sequence[Example], config: CurateConfig) -> None:
    by_split: dict[str, list[Example]] = {}
    for e in batch:
        by_split.setdefault(split_of(e, config.validation, config.seed), []).append(e)
    for split, examples in by_split.items():
        writer.write(to_table(examples), split)


def _keep_best(run: _Run, batches: Iterable[list[Example]], writer: DatasetWriter, config: CurateConfig, spool: Path):
    """keep="best": spool the first pass, then write all but each cluster's losers."""
    spool_schema = SCHEMA.append(pa.field("seq", pa.int64())).append(pa.field("split", pa.string()))
    with pq.ParquetWriter(spool, spool_schema) as w:
        for batch in batches:
            table = to_table(batch)
            table = table.append_column("seq", pa.array([e.seq for e in batch], pa.int64()))
            splits = [split_of(e, config.validation, config.seed) for e in batch]
            w.write_table(table.append_column("split", pa.array(splits, pa.string())))
    dropped = np.empty(0, np.int64)
    for step in run.steps:
        if isinstance(step, ExactDedup | NearDedup):
            losers = np.setdiff1d(step.losers(), dropped, assume_unique=True)
            run.dropped[step.name][step.name] += len(losers)
            dropped = np.union1d(dropped, losers)
    for batch in pq.ParquetFile(spool).iter_batches(batch_size=BATCH * 8):
        table = pa.Table.from_batches([batch])
        table = table.filter(pa.array(~np.isin(table["seq"].to_numpy(), dropped)))
        for split in pc.unique(table["split"]).to_pylist():
            part = table.filter(pc.equal(table["split"], split)).select(SCHEMA.names)
            writer.write(part, split)
    spool.unlink()


def curate(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    evals: Sequence[tuple[str, str | Path]] = (),
    config: CurateConfig | None = None,
    overwrite: bool = False,
    ledger: str | Path | None = None,
) -> CurateResult:
    """Filter, decontaminate, deduplicate and write run stores / exports as a chat dataset.

    evals: (name, path) evaluation sets to decontaminate against. ledger: where to record the run;
    by default the first input run directory's ledger, or the dataset's own when every input is an export.
    """
    config = config or CurateConfig()
    config.validate()
    out, paths = Path(out).resolve(), [Path(p) for p in inputs]
    if not paths:
        raise StillhouseError("no inputs: pass at least one run directory or export file")
    sources = open_sources(paths)
    for s in sources:  # read one record of each now, so a bad input fails before anything is written
        next(iter(s.examples()), None)
    names = [name for name, _ in evals]
    if len(set(names)) != len(names):
        raise StillhouseError(f"evaluation set names must differ: {names}")
    _check_output(out, overwrite, paths)
    eval_sets = [EvalSet.load(name, Path(p), config.decontam_ngram) for name, p in evals]
    steps = build_steps(config, eval_sets)

    run_id = new_run_id("curate")
    staging = out.with_name(f".{out.name}.tmp-{run_id}")
    first_run = next((s.path for s in sources if s.kind == "run"), None)
    final_ledger = Path(ledger) if ledger else ledger_path(first_run) if first_run else out / LEDGER_FILE
    # A ledger inside the dataset is written in the staging directory and moves with it.
    led_path = staging / LEDGER_FILE if final_ledger == out / LEDGER_FILE else final_ledger
    described = [s.describe() for s in sources]
    settings = {s.name: s.describe() for s in steps}
    staging.mkdir(parents=True)
    try:
        led = Ledger(led_path)
    except BaseException:
        shutil.rmtree(staging)
        raise
    try:
        led.append(
            run_id,
            "curate.start",
            {
                "operator": operator(),
                "config": asdict(config),
                "inputs": described,
                "evals": settings.get("decontamination", {}).get("sets", {}),
                "output": str(out),
            },
        )
        run = _Run(steps)
        writer = DatasetWriter(staging, config.format, config.shard_rows)
        batches = run(chain.from_iterable(s.examples() for s in sources))
        if config.keep == "best" and (config.exact_dedup or config.near_dedup):
            _keep_best(run, batches, writer, config, staging / "spool.parquet")
        else:
            for batch in batches:
                _write_split(writer, batch, config)
        shards = writer.close()
        digest, files = content_hash(staging, [p for paths_ in shards.values() for p in paths_])
        rows = {split: writer.rows[split] for split in shards}
        dropped = {name: dict(c) for name, c in run.dropped.items()}
        runs = card.collect_runs(described, set(run.sources), Path(ledger) if ledger else None)
        (staging / "README.md").write_text(
            card.render(
                name=out.name,
                run_id=run_id,
                ledger=final_ledger,
                read=run.read,
                splits={k: [p.name for p in v] for k, v in sorted(shards.items(), key=lambda kv: kv[0] != "train")},
                rows=rows,
                dropped=dropped,
                settings=settings,
                sources=described,
                runs=runs,
                content_hash=digest,
                fmt=config.format,
            ),
            encoding="utf-8",
        )
    except BaseException as e:
        led.append(run_id, "curate.end", {"error": str(e) or type(e).__name__, "ok": 0})
        led.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    led.close()
    _replace(staging, out)
    with Ledger(final_ledger) as led:
        led.append(
            run_id,
            "curate.end",
            {
                "ok": sum(rows.values()),
                "read": run.read,
                "dropped": dropped,
                "source_runs": sorted(run.sources),
                "teachers": [r.get("teacher") for r in runs],
                "outputs": {"path": str(out), "content_hash": digest, "rows": rows, "files": files},
            },
        )
    return CurateResult(out, run_id, final_ledger, run.read, rows, dropped, digest, files)
