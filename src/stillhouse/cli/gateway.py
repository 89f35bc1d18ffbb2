"""`stillhouse gateway`, `stillhouse keys create|list|revoke`, `stillhouse simulate`, `stillhouse detect`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError

keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke the gateway's API keys.")
app.add_typer(keys_app, name="keys")

KeysFile = Annotated[Path, typer.Option("--keys", help="The keys file (SQLite; created if missing).")]
DEFAULT_KEYS = Path("gateway/keys.sqlite")


def _keys(path: Path):
    from stillhouse.gateway.keys import KeyStore

    if not path.parent.exists() and path == DEFAULT_KEYS:
        path.parent.mkdir()
    return KeyStore(path)


@app.command()
def gateway(
    upstream: Annotated[str, typer.Option(help="The upstream's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")],
    keys: KeysFile = DEFAULT_KEYS,
    log: Annotated[Path, typer.Option(help="Request log directory (SQLite, rolled into Parquet).")] = Path(
        "gateway/log"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8080,
    retention: Annotated[
        str, typer.Option(help="full: keep prompts and answers; hashes: keep only their sha256 and MinHash sketch.")
    ] = "full",
    segment_rows: Annotated[int, typer.Option(help="Rows per Parquet segment rolled out of SQLite.")] = 100_000,
    upstream_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the upstream's API key (none needed locally).")
    ] = "UPSTREAM_API_KEY",
    trust_forwarded: Annotated[
        bool, typer.Option(help="Take the source address from X-Forwarded-For (behind a trusted proxy only).")
    ] = False,
) -> None:
    """An OpenAI-compatible proxy with per-key limits and a request log, until Ctrl-C."""
    from stillhouse.gateway.proxy import Running, check_upstream, serve_gateway

    check_upstream(upstream)
    if retention not in ("full", "hashes"):
        raise StillhouseError(f"--retention must be 'full' or 'hashes', not {retention!r}")
    if segment_rows < 1:
        raise StillhouseError("--segment-rows must be at least 1")
    if not 0 <= port <= 65535:
        raise StillhouseError(f"--port must be in 0..65535, not {port}")
    if keys == DEFAULT_KEYS:
        keys.parent.mkdir(exist_ok=True)

    def ready(running: Running) -> None:
        typer.echo(f"gateway at {running.base_url} -> {upstream}; log in {log} (Ctrl-C to stop)")

    serve_gateway(
        upstream,
        keys,
        log,
        host=host,
        port=port,
        retention=retention,
        segment_rows=segment_rows,
        upstream_key=os.environ.get(upstream_key_env),
        trust_forwarded=trust_forwarded,
        on_ready=ready,
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    rpm: Annotated[int | None, typer.Option(help="Requests per minute allowed (default: no limit).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute allowed (default: no limit).")] = None,
    keys: KeysFile = DEFAULT_KEYS,
) -> None:
    """Create a key; the key is printed once, only its hash is stored."""
    with _keys(keys) as store:
        key, secret = store.create(name, rpm=rpm, tpm=tpm)
    console.print(f"created {key.id} ({name}); the key is shown only now:")
    out.print(secret, highlight=False)


@keys_app.command("list")
def keys_list(keys: KeysFile = DEFAULT_KEYS, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every key: id, name, prefix, limits, created, revoked."""
    with _keys(keys) as store:
        rows = store.list()
    if as_json:
        out.print_json(json.dumps([k.__dict__ for k in rows]))
        return
    table = Table("id", "name", "key", "rpm", "tpm", "created", "revoked")
    for k in rows:
        table.add_row(
            k.id, k.name, k.shown + "...", str(k.rpm or "-"), str(k.tpm or "-"), _when(k.created), _when(k.revoked)
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="The key's id or name.")], keys: KeysFile = DEFAULT_KEYS
) -> None:
    """Revoke a key: a running gateway refuses it (401) from its next request."""
    with _keys(keys) as store:
        key = store.revoke(ident)
    console.print(f"revoked {key.id} ({key.name})")


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
