"""`stillhouse curate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, out


@app.command("curate")
def curate_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Run directories, or .jsonl/.parquet exports.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Dataset directory to create.")],
    eval_sets: Annotated[
        list[str], typer.Option("--eval", help="Evaluation set to decontaminate against: NAME=PATH or PATH.")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    no_filter: Annotated[
        list[str], typer.Option(help="Switch a filter off: failed, empty, truncated, refusal, length, repetition.")
    ] = [],  # noqa: B006
    refusal_pattern: Annotated[list[str], typer.Option(help="Regex added to the refusal list.")] = [],  # noqa: B006
    min_tokens: Annotated[int, typer.Option(help="Shortest answer kept, in tokens.")] = 0,
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer kept, in tokens.")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer directory for lengths (else chars/4).")] = None,
    max_repetition: Annotated[float, typer.Option(help="Highest share of repeated word n-grams.")] = 0.5,
    repetition_ngram: Annotated[int, typer.Option(help="n for the repetition filter.")] = 3,
    exact_dedup: Annotated[bool, typer.Option(help="Drop exact duplicates (normalised prompt+answer).")] = True,
    near_dedup: Annotated[bool, typer.Option(help="Drop near duplicates (MinHash LSH).")] = True,
    threshold: Annotated[float, typer.Option(help="Near-dedup Jaccard threshold.")] = 0.8,
    ngram: Annotated[int, typer.Option(help="Near-dedup word n-gram size.")] = 5,
    num_perm: Annotated[int, typer.Option(help="MinHash permutations.")] = 128,
    dedup_on: Annotated[str, typer.Option(help="Near-dedup on: prompt, answer or both.")] = "both",
    keep: Annotated[str, typer.Option(help="Of duplicates keep: first or best.")] = "first",
    score: Annotated[str, typer.Option(help="For --keep best: logprob, or a numeric prompt field.")] = "logprob",
    decontam_ngram: Annotated[int, typer.Option(help="Decontamination n-gram size.")] = 13,
    validation: Annotated[float, typer.Option(help="Share of prompts held out for validation.")] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
    shard_rows: Annotated[int, typer.Option(help="Rows per shard.")] = 100_000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default: the first run's).")] = None,
) -> None:
    """Filter, decontaminate and deduplicate run stores into a documented chat dataset."""
    from stillhouse.curate import CurateConfig, curate
    from stillhouse.curate.decontam import parse_eval_arg

    config = CurateConfig(
        skip=tuple(no_filter),
        refusal_patterns=tuple(refusal_pattern),
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        tokenizer=str(tokenizer) if tokenizer else None,
        repetition_ngram=repetition_ngram,
        max_repetition=max_repetition,
        exact_dedup=exact_dedup,
        near_dedup=near_dedup,
        near_threshold=threshold,
        near_ngram=ngram,
        num_perm=num_perm,
        dedup_on=dedup_on,  # type: ignore[arg-type]  # validated by CurateConfig
        keep=keep,  # type: ignore[arg-type]
        score=score,
        decontam_ngram=decontam_ngram,
        validation=validation,
        format=fmt,  # type: ignore[arg-type]
        shard_rows=shard_rows,
    )
    evals = [parse_eval_arg(e) for e in eval_sets]
    r = curate(inputs, output, evals=evals, config=config, overwrite=overwrite, ledger=ledger)
    table = Table("step", "removed", "detail")
    for step, reasons in r.dropped.items():
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.items()) if step == "decontamination" else ""
        table.add_row(step, str(sum(reasons.values())), detail)
    table.add_row("kept", f"{sum(r.rows.values())} of {r.read}", ", ".join(f"{k}: {v}" for k, v in r.rows.items()))
    out.print(table)
    out.print(f"dataset {r.out} (sha256 {r.content_hash}); ledger {r.ledger}, run {r.run_id}")
