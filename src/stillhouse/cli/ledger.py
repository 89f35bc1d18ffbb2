"""`stillhouse ledger show|verify|export|keygen`: reading a ledger never writes it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError
from stillhouse.core.outputs import atomic_write, check_output
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger, keygen
from stillhouse.provenance.lineage import artifact_anchors

ledger_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the provenance ledger.")
app.add_typer(ledger_app, name="ledger")

LedgerPath = Annotated[Path, typer.Argument(help="Ledger file (a run directory's ledger.sqlite, or a shared one).")]


def _open_ledger(path: Path) -> Ledger:
    return Ledger(path / LEDGER_FILE if path.is_dir() else path, readonly=True)


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
def ledger_verify(
    path: LedgerPath,
    artifact: Annotated[
        list[Path] | None,
        typer.Option(help="A dataset or model directory, or evidence file, made from this ledger: check its anchor."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="Ed25519 public key (.pub from `ledger keygen`): every entry must be signed.")
    ] = None,
) -> None:
    """Check the hash chain; name every edited, deleted or reordered entry, and a cut tail against any artifact."""
    anchors = [a for p in artifact or [] for a in artifact_anchors(p)]
    key = _read(public_key) if public_key else None
    with _open_ledger(path) as led:
        problems, n = led.verify(anchors, key), len(led.entries())
    if problems:
        for p in problems:
            console.print(f"[red]TAMPERED[/red] {p}", highlight=False)
        raise typer.Exit(1)
    checked = f", {len(anchors)} artifact anchor(s) found" if anchors else ""
    signed = ", every entry signed" if key else ""
    out.print(f"ledger intact: {n} entries, hash chain verified{checked}{signed}")


@ledger_app.command("export")
def ledger_export(
    path: LedgerPath,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="JSON file to write (default: stdout).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Everything as JSON, for a model card or an audit."""
    source = path / LEDGER_FILE if path.is_dir() else path
    target = check_output(output, overwrite=overwrite, inputs=[source]) if output else None
    with _open_ledger(path) as led:
        text = json.dumps(led.export(), indent=2, default=str) + "\n"
    if target is None:
        sys.stdout.write(text)
        return
    with atomic_write(target) as tmp:
        tmp.write_text(text)
    out.print(f"ledger -> {target}")


@ledger_app.command("keygen")
def ledger_keygen(
    output: Annotated[Path, typer.Option("-o", "--output", help="Private key file to write (its .pub beside it).")],
) -> None:
    """Make an Ed25519 key pair; set STILLHOUSE_LEDGER_KEY=PRIVATE_KEY to sign every entry written."""
    public = keygen(output)
    out.print(f"private key {output} (keep it outside the ledger's folder), public key {public}")
    out.print(f"sign: export STILLHOUSE_LEDGER_KEY={output}; check: ledger verify LEDGER --public-key {public}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise StillhouseError(f"cannot read {path}: {e.strerror or e}") from None
