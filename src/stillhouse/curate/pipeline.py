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
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from stillhouse.core.config import Config
from stillhouse.core.dataset import SCHEMA, DatasetWriter, Format, content_hash, write_card
from stillhouse.core.errors import StillhouseError
from stillhouse.core.grading import Grader, Match, text_grader
from stillhouse.core.ids import new_run_id
from stillhouse.core.outputs import check_writable
from stillhouse.curate import card
from stillhouse.curate.decontam import Decontaminate, EvalSet
from stillhouse.curate.dedup import ExactDedup, Keep, NearDedup
from stillhouse.curate.example import Example, Step, Target
from stillhouse.curate.filters import (
    Empty,
    Failed,
    Length,
    Refusal,
    Repetition,
    Truncated,
    Verified,
    tokenizer_counter,
)
from stillhouse.curate.sources import open_sources
from stillhouse.curate.writer import split_of, to_table
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger, ledger_path, stage_run

BATCH = 1024
Filter = Literal["failed", "empty", "truncated", "refusal", "length", "repetition"]
FILTERS: tuple[str, ...] = get_args(Filter)


class CurateConfig(Config):
    """Every knob of a curation run; recorded whole in the ledger."""

    no_filter: list[Filter] = Field(default=[], description="Switch a filter off (repeatable).")
    refusal_pattern: list[str] = Field(default=[], description="Regex added to the refusal list (repeatable).")
    min_tokens: int = Field(default=0, ge=0, description="Shortest answer kept, in tokens.")
    max_tokens: int | None = Field(default=None, ge=1, description="Longest answer kept, in tokens.")
    tokenizer: str | None = Field(default=None, description="Tokenizer directory for lengths (else chars/4).")
    verify: Match | None = Field(
        default=None,
        description="Keep only answers graded right against the 'answer' their prompt record carried (rejection "
        "sampling): exact, normalised or contains.",
    )
    repetition_ngram: int = Field(default=3, ge=1, description="n for the repetition filter.")
    max_repetition: float = Field(default=0.5, gt=0, le=1, description="Highest share of repeated word n-grams.")
    exact_dedup: bool = Field(default=True, description="Drop exact duplicates (normalised prompt+answer).")
    near_dedup: bool = Field(default=True, description="Drop near duplicates (MinHash LSH).")
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Near-dedup Jaccard threshold.")
    ngram: int = Field(default=5, ge=1, description="Near-dedup word n-gram size.")
    num_perm: int = Field(default=128, ge=2, description="MinHash permutations.")
    dedup_on: Target = Field(default="both", description="Near-dedup on: prompt, answer or both.")
    keep: Keep = Field(default="first", description="Of duplicates keep: first or best.")
    score: str = Field(default="logprob", description="For --keep best: logprob, or a numeric prompt field.")
    decontam_ngram: int = Field(default=13, ge=1, description="Decontamination n-gram size.")
    validation: float = Field(default=0.0, ge=0, lt=1, description="Share of prompts held out for validation.")
    format: Format = Field(default="parquet", description="Shard format: parquet or jsonl.")
    shard_rows: int = Field(default=100_000, ge=1, description="Rows per shard.")
    seed: int = Field(default=0, description="Seeds MinHash and the validation split.")

    @model_validator(mode="after")
    def _lengths(self) -> CurateConfig:
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"--min-tokens {self.min_tokens} is above --max-tokens {self.max_tokens}: every answer would be dropped"
            )
        return self


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


def build_steps(config: CurateConfig, evals: Sequence[EvalSet], verifier: Grader | None = None) -> list[Step]:
    """Filters first (cheap), then verification, then decontamination (so a contaminated example counts there
    even when duplicated, and never wins a dedup cluster), then exact and near dedup."""
    count = tokenizer_counter(config.tokenizer) if config.tokenizer else None
    filters: dict[str, Step] = {
        "failed": Failed(),
        "empty": Empty(),
        "truncated": Truncated(),
        "refusal": Refusal(config.refusal_pattern),
        "length": Length(config.min_tokens, config.max_tokens, count),
        "repetition": Repetition(config.repetition_ngram, config.max_repetition),
    }
    steps = [f for name, f in filters.items() if name not in config.no_filter]
    if verifier is not None:
        steps.append(Verified(verifier, "custom"))
    elif config.verify:
        steps.append(Verified(text_grader(config.verify), config.verify))
    if evals:
        steps.append(Decontaminate(evals, config.decontam_ngram))
    if config.exact_dedup:
        steps.append(ExactDedup(config.keep, config.score))
    if config.near_dedup:
        steps.append(
            NearDedup(
                config.threshold,
                config.ngram,
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
    check_writable(out)
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


def _check_score(score: str, examples: Sequence[Example]) -> None:
    """--keep best needs a score on the examples: refuse a field they do not have, rather than keep the first."""
    if score == "logprob" or not examples:  # logprobs may be missing on some answers: those rank last
        return
    values = [e.meta.get(score) for e in examples]
    if not any(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise StillhouseError(
            f"--keep best --score {score}: the prompts have no numeric '{score}' field (first: {values[0]!r}); "
            "name a numeric field of the prompts, or --score logprob"
        )


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
    verifier: Grader | None = None,
) -> CurateResult:
    """Filter, verify, decontaminate, deduplicate and write run stores / exports as a chat dataset.

    evals: (name, path) evaluation sets to decontaminate against. ledger: where to record the run;
    by default the first input run directory's ledger, or the dataset's own when every input is an export.
    verifier: a grader for answers whose prompt has an expected 'answer' (a task's own, where `config.verify`'s
    text matching cannot read the answer); wrong ones are dropped.
    """
    config = config or CurateConfig()
    out, paths = Path(out).resolve(), [Path(p) for p in inputs]
    if not paths:
        raise StillhouseError("no inputs: pass at least one run directory or export file")
    sources = open_sources(paths)
    firsts = [next(iter(s.examples()), None) for s in sources]  # a bad input fails before anything is written
    if config.keep == "best" and (config.exact_dedup or config.near_dedup):
        _check_score(config.score, [e for e in firsts if e is not None and e.status == "ok"])
    names = [name for name, _ in evals]
    if len(set(names)) != len(names):
        raise StillhouseError(f"evaluation set names must differ: {names}")
    _check_output(out, overwrite, paths)
    eval_sets = [EvalSet.load(name, Path(p), config.decontam_ngram) for name, p in evals]
    steps = build_steps(config, eval_sets, verifier)

    run_id = new_run_id("curate")
    staging = out.with_name(f".{out.name}.tmp-{run_id}")
    first_run = next((s.path for s in sources if s.kind == "run"), None)
    final_ledger = Path(ledger) if ledger else ledger_path(first_run) if first_run else out / LEDGER_FILE
    # A ledger inside the dataset is written in the staging directory and moves with it.
    led_path = staging / LEDGER_FILE if final_ledger.resolve() == out / LEDGER_FILE else final_ledger
    described = [s.describe() for s in sources]
    settings = {s.name: s.describe() for s in steps}
    start = {
        "config": config.model_dump(),
        "inputs": described,
        "evals": settings.get("decontamination", {}).get("sets", {}),
        "output": str(out),
    }
    staging.mkdir(parents=True)
    try:
        with Ledger(led_path) as led, stage_run(led, "curate", start, run_id) as record:
            anchor = replace(led.head(), ledger=str(final_ledger.resolve()))
            run = _Run(steps)
            writer = DatasetWriter(staging, config.format, config.shard_rows)
            batches = run(chain.from_iterable(s.examples() for s in sources))
            if config.keep == "best" and (config.exact_dedup or config.near_dedup):
                _keep_best(run, batches, writer, config, staging / "spool.parquet")
            else:
                for batch in batches:
                    _write_split(writer, batch, config)
            shards = writer.close()
            digest, files = content_hash(staging)
            rows = {split: writer.rows[split] for split in shards}
            dropped = {name: dict(c) for name, c in run.dropped.items()}
            runs = card.collect_runs(described, set(run.sources), Path(ledger) if ledger else None)
            block = card.block(run_id, digest, run.read, rows, dropped, sorted(run.sources), runs, anchor)
            splits = sorted(shards, key=lambda split: split != "train")
            body = card.render(
                name=out.name,
                run_id=run_id,
                ledger=final_ledger,
                read=run.read,
                splits={k: [p.name for p in shards[k]] for k in splits},
                rows=rows,
                dropped=dropped,
                settings=settings,
                sources=described,
                runs=runs,
                content_hash=digest,
                fmt=config.format,
            )
            write_card(staging, splits, config.format, block, body)
            record.end.update(
                {
                    "read": run.read,
                    "dropped": dropped,
                    "source_runs": sorted(run.sources),
                    "teachers": block["teachers"],
                    "outputs": {"path": str(out), "content_hash": digest, "rows": rows, "files": files},
                }
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, out)
    return CurateResult(out, run_id, final_ledger, run.read, rows, dropped, digest, files)
