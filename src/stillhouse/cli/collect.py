"""`stillhouse collect`, `export` and `synth`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.terms import Purpose


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
    terms: Annotated[
        str | None, typer.Option(help="Terms the outputs are used under: a licence id or free text.")
    ] = None,
    permission: Annotated[
        str | None, typer.Option(help="Permission you hold where the terms forbid the purpose.")
    ] = None,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default RUN_DIR/ledger.sqlite).")] = None,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key ('' for none).")
    ] = "OPENAI_API_KEY",
    system: Annotated[str | None, typer.Option(help="System prompt for records without one.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion tokens per request.")] = None,
    n: Annotated[int | None, typer.Option(help="Choices per request.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")] = None,
    top_logprobs: Annotated[int | None, typer.Option(help="Keep the top-K logprobs of every generated token.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Other request parameter KEY=VALUE (repeatable).")] = None,
    samples: Annotated[int, typer.Option(help="Independent requests per prompt.")] = 1,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 64,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute at most.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute at most (estimated, then reconciled).")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Stop after this many requests (run dir total).")] = None,
    max_tokens_total: Annotated[int | None, typer.Option(help="Stop at this many tokens (run dir total).")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Stop at this spend in USD (run dir total).")] = None,
    prices: Annotated[
        Path | None, typer.Option(help="Extra model prices, JSON/TOML: {model: {input, output}} USD/1M.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request before it is retried.")] = 600.0,
    max_retries: Annotated[int, typer.Option(help="Retries per request (5xx, 429, timeouts, dropped links).")] = 6,
) -> None:
    """Send every prompt to an OpenAI-compatible teacher once; commit answers as they arrive."""
    from stillhouse.cli.progress import Reporter, summary
    from stillhouse.collect import collect as run_collect

    with Reporter(console) as reporter:
        result = run_collect(
            prompts, base_url=base_url, model=model, out=run_dir, purpose=purpose, terms=terms, permission=permission,
            ledger=ledger, api_key_env=api_key_env or None, system=system, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, n=n, seed=seed, stop=stop or None, top_logprobs=top_logprobs,
            params=dict(_param(p) for p in param or []), samples=samples, concurrency=concurrency, rpm=rpm,
            tpm=tpm, max_requests=max_requests, max_tokens_total=max_tokens_total, max_cost=max_cost,
            prices=prices, timeout_s=timeout, max_retries=max_retries, on_progress=reporter,
        )  # fmt: skip
    stopped = "finished" if result.stop_reason == "done" else f"stopped: {result.stop_reason} reached"
    console.print(
        f"{stopped} · {summary(result)} · {result.skipped:,} already answered", highlight=False, soft_wrap=True
    )
    out.print(f"run {result.run_id} -> {result.run_dir}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A collect run directory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
) -> None:
    """Write a run's answers (prompt, messages, responses, usage, logprobs, key) as JSONL or Parquet."""
    from stillhouse.collect.export import export

    n = export(run_dir, output, fmt)
    out.print(f"{n:,} exchanges -> {output}")


@app.command("synth")
def synth_cmd(
    seeds: Annotated[Path, typer.Argument(help="Seed tasks: a .txt (one per line) or .jsonl (prompt field).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PROMPTS.jsonl to write.")],
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")],
    model: Annotated[str, typer.Option(help="Model name at that endpoint.")],
    target: Annotated[int, typer.Option(help="New tasks wanted.")] = 100,
    max_requests: Annotated[int | None, typer.Option(help="Request budget, run dir total (default: --target).")] = None,
    per_request: Annotated[int, typer.Option(help="New tasks asked for per request.")] = 8,
    max_rouge: Annotated[float, typer.Option(help="Keep a task only when ROUGE-L to every kept one is below.")] = 0.7,
    temperature: Annotated[float, typer.Option()] = 1.0,
    concurrency: Annotated[int, typer.Option(help="Requests per round, all in flight at once.")] = 8,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute at most.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute at most.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Stop at this spend in USD (run dir total).")] = None,
    prices: Annotated[Path | None, typer.Option(help="Extra model prices for --max-cost (see collect).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds which tasks each request shows.")] = 0,
    run_dir: Annotated[Path | None, typer.Option(help="Run store (default: <output>.synth/ beside it).")] = None,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default: the run directory's).")] = None,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key ('' for none).")
    ] = "OPENAI_API_KEY",
    terms: Annotated[str | None, typer.Option(help="Terms that govern the teacher's outputs.")] = None,
    purpose: Annotated[Purpose, typer.Option(help="What the prompts are for.")] = Purpose.distillation,
    permission: Annotated[str | None, typer.Option(help="A permission you hold that the terms require.")] = None,
) -> None:
    """Synthesise new prompts from a few seed tasks (Self-Instruct), kept only when new; sent through collect."""
    from stillhouse.collect.synth import SynthConfig, synth

    config = SynthConfig(
        target=target,
        max_requests=max_requests,
        per_request=per_request,
        max_rouge=max_rouge,
        temperature=temperature,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        max_cost=max_cost,
        seed=seed,
    )
    r = synth(
        seeds, output, base_url=base_url, model=model, config=config, run_dir=run_dir, ledger=ledger,
        api_key_env=api_key_env or None, terms=terms, purpose=purpose, permission=permission, prices=prices,
    )  # fmt: skip
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(r.rejected.items())) or "none"
    out.print(f"kept {len(r.kept)} new prompts -> {r.out} ({r.requests} requests, {r.sent} sent now)")
    out.print(f"stopped at {r.stop_reason}; rejected: {rejected}; run store {r.run_dir}, run {r.run_id}")
