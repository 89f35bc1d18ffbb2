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


@app.command()
def simulate(
    out_dir: Annotated[
        Path | None, typer.Option("-o", "--out", help="Directory for the log, labels.jsonl, scenario.json.")
    ] = None,
    scenario: Annotated[str, typer.Option(help="Which scenario (default: the hard one); see --list.")] = "hard",
    seed: Annotated[int | None, typer.Option(help="Another seed for the same scenario.")] = None,
    scale: Annotated[float, typer.Option(help="Scale the scenario's accounts and volume (0-10].")] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
) -> None:
    """Write labelled synthetic gateway traffic (benign users and extraction campaigns) to evaluate detectors."""
    from stillhouse.gateway.simulate import SCENARIOS
    from stillhouse.gateway.simulate import scenario as pick
    from stillhouse.gateway.simulate import simulate as run

    if list_:
        for name, sc in SCENARIOS.items():
            out.print(f"[bold]{name}[/bold]: {sc.description}", highlight=False)
        return
    if out_dir is None:
        raise StillhouseError("pass -o DIR for the simulated log (or --list to see the scenarios)")
    sc = pick(scenario, seed=seed, scale=scale)
    if out_dir.exists() and not overwrite:
        raise StillhouseError(f"{out_dir} exists; pick another -o or pass --overwrite")
    with console.status(f"simulating '{sc.name}'"):
        result = run(sc, out_dir, overwrite=overwrite)
    console.print(
        f"{sc.name}: {result['accounts']} accounts ({result['campaign_accounts']} carrying the campaign), "
        f"{result['rows']} requests in {out_dir}"
    )


@app.command()
def detect(
    log: Annotated[Path, typer.Argument(help="A gateway or simulator log directory (or one .parquet / .sqlite).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print accounts and clusters as JSON.")] = False,
    stix: Annotated[Path | None, typer.Option(help="Write a STIX 2.1 bundle of the flagged campaigns here.")] = None,
    tlp: Annotated[str, typer.Option(help="TLP marking of the STIX bundle: clear, green, amber, red.")] = "amber",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --stix file.")] = False,
    top: Annotated[int, typer.Option(help="Accounts to show in the table.")] = 20,
    accounts: Annotated[
        Path | None,
        typer.Option(
            help="What billing knows of each account (JSONL, CSV or Parquet with an 'account' column, e.g. a payment "
            "instrument's fingerprint); default: the log directory's accounts.jsonl, if any."
        ),
    ] = None,
    infra_min: Annotated[
        int | None, typer.Option(help="Accounts sharing an --accounts value before it links them [default: 10].")
    ] = None,
) -> None:
    """Score accounts for extraction and group coordinated ones into campaigns, with the evidence."""
    from stillhouse.gateway.log import log_files

    log_files(log)  # a clear error before any work (and before the heavier imports)
    from stillhouse.gateway.detect import detect as run
    from stillhouse.gateway.detect import read_accounts
    from stillhouse.gateway.stix import TLP, write_bundle

    if infra_min is not None and infra_min < 2:
        raise StillhouseError(f"--infra-min must be at least 2, not {infra_min}")
    account_table = read_accounts(accounts) if accounts is not None else None

    if stix is not None:
        if stix.exists() and not overwrite:
            raise StillhouseError(f"{stix} exists; pick another --stix path or pass --overwrite")
        if tlp not in TLP:
            raise StillhouseError(f"--tlp must be one of {', '.join(TLP)}, not {tlp!r}")
    if top < 0:
        raise StillhouseError("--top must be at least 0")
    with console.status("detecting"):
        result = run(log, accounts=account_table, **({} if infra_min is None else {"infra_min": infra_min}))
    if stix is not None:
        write_bundle(result, stix, overwrite=overwrite, tlp=tlp)
        console.print(f"STIX bundle written to {stix}")
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    flagged = [a for a in result.accounts if a.flagged]
    console.print(
        f"{result.rows} requests, {len(result.accounts)} accounts: {len(flagged)} flagged, "
        f"{sum(1 for c in result.clusters if set(c.accounts) & {a.account for a in flagged})} campaigns "
        f"({result.seconds:.1f} s)"
    )
    for c in result.clusters[:5]:
        out.print(f"cluster {c.id} ({len(c.accounts)} accounts, score {c.score:.1f}): " + "; ".join(c.reasons))
    table = Table("account", "score", "flagged", "cluster", "requests", "reasons")
    for a in result.accounts[:top]:
        table.add_row(
            a.account, f"{a.score:.1f}", "yes" if a.flagged else "", str(a.cluster if a.cluster is not None else "-"),
            str(a.requests), "; ".join(a.reasons[:3]),
        )  # fmt: skip
    out.print(table)
