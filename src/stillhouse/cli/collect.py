"""`stillhouse collect`, `export` and `synth`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app, console, out
from stillhouse.cli.options import config_options
from stillhouse.cli.progress import Reporter, summary
from stillhouse.collect import collect as run_collect
from stillhouse.collect.export import FORMATS, export
from stillhouse.collect.run import CollectConfig
from stillhouse.collect.synth import SynthConfig, synth
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.terms import Purpose

FAILING = 0.1  # a run where fewer than this share of requests succeeded exits non-zero

ApiKeyEnv = Annotated[str, typer.Option(help="Environment variable holding the API key ('' for none).")]
Terms = Annotated[str | None, typer.Option(help="Terms the outputs are used under: a licence id or free text.")]
Permission = Annotated[str | None, typer.Option(help="Permission you hold where the terms forbid the purpose.")]


def _param(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise StillhouseError(f"--param takes KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@app.command()
@config_options(CollectConfig, exclude={"params"})
def collect(
    prompts: Annotated[
        Path, typer.Argument(help="JSONL ({id?, messages} or {id?, prompt}), Parquet, or a saved HF dataset.")
    ],
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")],
    model: Annotated[str, typer.Option(help="Teacher model name.")],
    run_dir: Annotated[
        Path, typer.Option("--out", help="Run directory (store.sqlite, ledger.sqlite); re-run to resume.")
    ],
    purpose: Annotated[Purpose, typer.Option(help="What the answers are for (checked against the teacher's terms).")],
    config: CollectConfig,
    terms: Terms = None,
    permission: Permission = None,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default RUN_DIR/ledger.sqlite).")] = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    param: Annotated[list[str] | None, typer.Option(help="Other request parameter KEY=VALUE (repeatable).")] = None,
) -> None:
    """Send every prompt to an OpenAI-compatible teacher once; commit answers as they arrive.

    Exits 1 when requests failed and fewer than 10 % succeeded, naming the reasons."""
    config = config.model_copy(update={"params": dict(_param(p) for p in param or [])})
    with Reporter(console) as reporter:
        result = run_collect(
            prompts, base_url=base_url, model=model, out=run_dir, purpose=purpose, terms=terms, permission=permission,
            ledger=ledger, api_key_env=api_key_env or None, config=config, on_progress=reporter,
        )  # fmt: skip
    stopped = "finished" if result.stop_reason == "done" else f"stopped: {result.stop_reason} reached"
    console.print(
        f"{stopped} · {summary(result)} · {result.skipped:,} already answered", highlight=False, soft_wrap=True
    )
    for reason, count in list(result.failures.items())[:5]:
        console.print(f"  {count:,} failed: {reason}", highlight=False, soft_wrap=True)
    out.print(f"run {result.run_id} -> {result.run_dir}")
    if result.failed and result.ok < FAILING * (result.ok + result.failed):
        top = next(iter(result.failures), "")
        raise StillhouseError(f"{result.failed:,} of {result.ok + result.failed:,} requests failed; most: {top}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A collect run directory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (never one of the run's).")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "jsonl",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write a run's answers (prompt, messages, responses, usage, logprobs, key) as JSONL or Parquet."""
    n = export(run_dir, output, fmt, overwrite=overwrite)
    out.print(f"{n:,} exchanges -> {output}")


@app.command("synth")
@config_options(SynthConfig)
def synth_cmd(
    seeds: Annotated[Path, typer.Argument(help="Seed tasks: a .txt (one per line) or .jsonl (prompt field).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PROMPTS.jsonl to write.")],
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")],
    model: Annotated[str, typer.Option(help="Model name at that endpoint.")],
    config: SynthConfig,
    prices: Annotated[Path | None, typer.Option(help="Extra model prices for --max-cost (see collect).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run store (default: <output>.synth/ beside it).")] = None,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default: the run directory's).")] = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    terms: Terms = None,
    purpose: Annotated[Purpose, typer.Option(help="What the prompts are for.")] = Purpose.distillation,
    permission: Permission = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Synthesise new prompts from a few seed tasks (Self-Instruct), kept only when new; sent through collect."""
    r = synth(
        seeds, output, base_url=base_url, model=model, config=config, run_dir=run_dir, ledger=ledger,
        api_key_env=api_key_env or None, terms=terms, purpose=purpose, permission=permission, prices=prices,
        overwrite=overwrite,
    )  # fmt: skip
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(r.rejected.items())) or "none"
    out.print(f"kept {len(r.kept)} new prompts -> {r.out} ({r.requests} requests, {r.sent} sent now)")
    out.print(f"stopped at {r.stop_reason}; rejected: {rejected}; run store {r.run_dir}, run {r.run_id}")
