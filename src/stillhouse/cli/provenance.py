"""`stillhouse provenance MODEL_DIR`: the whole lineage of a trained model, verified, in one command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out
from stillhouse.provenance.lineage import provenance


@app.command("provenance")
def provenance_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `stillhouse train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Which teachers, under which terms, for which purpose; which runs, exchanges, drops and dataset; chain checked."""
    p = provenance(model_dir)
    if as_json:
        sys.stdout.write(json.dumps(p, indent=2, default=str) + "\n")
    else:
        _print(p)
    if not p["chain"]["intact"]:
        raise typer.Exit(1)


def _print(p: dict[str, Any]) -> None:
    m, d = p["model"], p["dataset"]
    out.print(
        f"[bold]{m['path']}[/bold]: {m['method']} of {m['student']}, {m['steps']} steps (train run {m['train_run']})"
    )
    out.print(f"  weights sha256 {m['weights_hash']}", highlight=False)
    out.print(f"dataset {d['path']} (sha256 {d['content_hash']}), curate run {d['curate_run']}", highlight=False)
    if d["read"] is not None:
        kept = sum((d["rows"] or {}).values())
        drops = "; ".join(f"{step} {sum(r.values())}" for step, r in d["dropped"].items() if sum(r.values()))
        out.print(f"  {kept:,} kept of {d['read']:,} read; dropped: {drops or 'none'}", highlight=False)
    table = Table("collect run", "teacher", "base URL", "terms", "purpose", "permission", "exchanges", "tokens")
    for c in p["collect_runs"]:
        table.add_row(
            c["run_id"], str(c["teacher"]), str(c["base_url"]), str(c["terms"]), str(c["purpose"]),
            str(c["permission"] or "-"), str(c["exchanges"]), str(c["tokens"]),
        )  # fmt: skip
    out.print(table)
    chain = p["chain"]
    if chain["intact"]:
        out.print(f"chain intact: {len(chain['ledgers'])} ledger(s), {chain['anchors']} artifact anchor(s) checked")
    for problem in chain["problems"]:
        console.print(f"[red]TAMPERED[/red] {problem}", highlight=False)
