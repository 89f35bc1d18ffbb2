"""`stillhouse train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app, out, quiet_hf
from stillhouse.cli.options import config_options
from stillhouse.embedded import STUDENT_NAME, resolve_student
from stillhouse.train import TrainConfig


@app.command("train")
@config_options(TrainConfig, defaults={"student": STUDENT_NAME})
def train_cmd(
    dataset: Annotated[Path, typer.Argument(help="Curated dataset directory (made by `stillhouse curate`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to write (new or empty).")],
    config: TrainConfig,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: the dataset's, else OUTPUT/ledger.sqlite).")
    ] = None,
) -> None:
    """Train a student on a curated dataset (SFT on assistant tokens, optional top-k KD, LoRA); re-run to resume.

    --student pebble is the shipped base student; a fresh preset (tiny, small) reads with Ember's tokenizer
    unless --tokenizer says otherwise."""
    quiet_hf()
    student, tokenizer = resolve_student(config.student, config.tokenizer)
    from stillhouse.train import train

    r = train(dataset, output, config.model_copy(update={"student": student, "tokenizer": tokenizer}), ledger=ledger)
    resumed = f", resumed at step {r.resumed_from}" if r.resumed_from is not None else ""
    val = f", validation loss {r.val_loss:.4f}" if r.val_loss is not None else ""
    skipped = f"; skipped {r.skipped}" if r.skipped else ""
    out.print(
        f"saved {r.model_dir}: {r.steps} steps{resumed}, loss {sum(r.losses[-20:]) / len(r.losses[-20:]):.4f}{val}, "
        f"{r.tokens_per_s:,.0f} tokens/s{skipped}; ledger run {r.run_id}",
        highlight=False,
    )
