"""The `stillhouse` command: a thin layer over the Python API, one command per pipeline stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stillhouse.errors import StillhouseError
from stillhouse.ledger import LEDGER_FILE, Ledger

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Black-box LLM distillation with a provenance ledger.",
)
ledger_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the provenance ledger.")
app.add_typer(ledger_app, name="ledger")

console = Console(stderr=True)
out = Console()

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


@app.command()
def serve(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Hugging Face model directory (default: the embedded teacher, Ember).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="STILLHOUSE_API_KEY", help="Require this bearer key from clients.")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Served model name (default: the directory's name).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (default: one per core; 1 is faster on a busy machine).")
    ] = None,
) -> None:
    """Serve a local model over an OpenAI-compatible API (chat, completions, models) until Ctrl-C."""
    from stillhouse.serve import Server, serve_forever

    def ready(server: Server) -> None:
        typer.echo(f"serving model '{server.model}' at {server.base_url} (Ctrl-C to stop)")

    serve_forever(
        model_dir, host=host, port=port, api_key=api_key, model_name=model_name, threads=threads, on_ready=ready
    )


def main() -> None:
    """Console entry point: user errors become one line on stderr, never a traceback."""
    try:
        app()
    except StillhouseError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; everything received so far is saved, re-run the same command to resume")
        sys.exit(130)
