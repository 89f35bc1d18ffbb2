"""`stillhouse ledger show|verify|export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger

ledger_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the provenance ledger.")
app.add_typer(ledger_app, name="ledger")

LedgerPath = Annotated[Path, typer.Argument(help="Ledger file (a run directory's ledger.sqlite, or a shared one).")]


def _open_ledger(path: Path) -> Ledger:
    if path.is_dir():
        path = path / LEDGER_FILE
    if not path.exists():
        raise StillhouseError(f"no ledger at {path}; pass the ledger file or a run directory that has one")
    return Ledger(path)


@ledger_app.command("show")
def ledger_show(path: LedgerPath) -> None:
    """One line per run: stage, teacher, terms, purpose, counts, spend."""
    with _open_ledger(path) as led:
        runs = led.runs()
    table = Table("run", "stage", "teacher", "terms", "purpose", "ok", "tokens", "cost $", "ended")
    for r in runs:
        teacher = r.get("teacher") or {}
        tokens = (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0)
        table.add_row(
            r["run_id"],
            r.get("stage", ""),
            f"{teacher.get('host', '')} {teacher.get('model', '')}".strip(),
            str(r.get("terms") or ""),
            str(r.get("purpose") or ""),
            str(r.get("ok", "")),
            str(tokens or ""),
            f"{r['cost']:.4f}" if "cost" in r else "",
            r.get("ended", "(running)"),
        )
    out.print(table)


@ledger_app.command("verify")
def ledger_verify(path: LedgerPath) -> None:
    """Check the hash chain; name every edited, deleted or reordered entry."""
    with _open_ledger(path) as led:
        problems, n = led.verify(), len(led.entries())
    if problems:
        for p in problems:
            console.print(f"[red]TAMPERED[/red] {p}")
        raise typer.Exit(1)
    out.print(f"ledger intact: {n} entries, hash chain verified")


@ledger_app.command("export")
def ledger_export(
    path: LedgerPath,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File (default: stdout).")] = None,
) -> None:
    """Everything as JSON, for a model card or an audit."""
    with _open_ledger(path) as led:
        text = json.dumps(led.export(), indent=2, default=str)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
