"""`stillhouse curate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, out
from stillhouse.cli.options import config_options
from stillhouse.curate import CurateConfig, curate
from stillhouse.curate.decontam import parse_eval_arg


@app.command("curate")
@config_options(CurateConfig)
def curate_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Run directories, or .jsonl/.parquet exports.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Dataset directory to create.")],
    config: CurateConfig,
    eval_sets: Annotated[
        list[str] | None, typer.Option("--eval", help="Evaluation set to decontaminate against: NAME=PATH or PATH.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default: the first run's).")] = None,
) -> None:
    """Filter, decontaminate and deduplicate run stores into a documented chat dataset."""
    evals = [parse_eval_arg(e) for e in eval_sets or []]
    r = curate(inputs, output, evals=evals, config=config, overwrite=overwrite, ledger=ledger)
    table = Table("step", "removed", "detail")
    for step, reasons in r.dropped.items():
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.items()) if step == "decontamination" else ""
        table.add_row(step, str(sum(reasons.values())), detail)
    table.add_row("kept", f"{sum(r.rows.values())} of {r.read}", ", ".join(f"{k}: {v}" for k, v in r.rows.items()))
    out.print(table)
    out.print(f"dataset {r.out} (sha256 {r.content_hash}); ledger {r.ledger}, run {r.run_id}")
