"""`stillhouse serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app


@app.command()
def serve(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Hugging Face model directory (default: the embedded teacher, Ember).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="STILLHOUSE_API_KEY", help="Require this bearer key from clients.")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Served model name (default: the directory's name).")] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch CPU threads (default: one per core; 1 is faster on a busy machine)."),
    ] = None,
    watermark: Annotated[
        Path | None, typer.Option(help="Watermark every answer with this key file (`stillhouse watermark keygen`).")
    ] = None,
) -> None:
    """Serve a local model over an OpenAI-compatible API (chat, completions, models) until Ctrl-C."""
    from stillhouse.embedded import teacher_path
    from stillhouse.forensics.key import load_key
    from stillhouse.serve import Server, serve_forever

    key = load_key(watermark) if watermark is not None else None

    def ready(server: Server) -> None:
        marked = f", watermarked with key {key.fingerprint}" if key else ""
        typer.echo(f"serving model '{server.model}' at {server.base_url}{marked} (Ctrl-C to stop)")

    serve_forever(
        model_dir or teacher_path(),
        host=host,
        port=port,
        api_key=api_key,
        model_name=model_name,
        threads=threads,
        on_ready=ready,
        watermark=key,
    )
