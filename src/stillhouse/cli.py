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
from stillhouse.terms import Purpose

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


# -- collect / export ------------------------------------------------------------------------------


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
    from stillhouse.collect import collect as run_collect
    from stillhouse.progress import Reporter, summary

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
    from stillhouse.export import export

    n = export(run_dir, output, fmt)
    out.print(f"{n:,} exchanges -> {output}")


# --- curate and synth: thin wrappers over stillhouse.curate.curate and stillhouse.synth.synth ---


@app.command("curate")
def curate_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Run directories, or .jsonl/.parquet exports.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Dataset directory to create.")],
    eval_sets: Annotated[
        list[str], typer.Option("--eval", help="Evaluation set to decontaminate against: NAME=PATH or PATH.")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    no_filter: Annotated[
        list[str], typer.Option(help="Switch a filter off: failed, empty, truncated, refusal, length, repetition.")
    ] = [],  # noqa: B006
    refusal_pattern: Annotated[list[str], typer.Option(help="Regex added to the refusal list.")] = [],  # noqa: B006
    min_tokens: Annotated[int, typer.Option(help="Shortest answer kept, in tokens.")] = 0,
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer kept, in tokens.")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer directory for lengths (else chars/4).")] = None,
    max_repetition: Annotated[float, typer.Option(help="Highest share of repeated word n-grams.")] = 0.5,
    repetition_ngram: Annotated[int, typer.Option(help="n for the repetition filter.")] = 3,
    exact_dedup: Annotated[bool, typer.Option(help="Drop exact duplicates (normalised prompt+answer).")] = True,
    near_dedup: Annotated[bool, typer.Option(help="Drop near duplicates (MinHash LSH).")] = True,
    threshold: Annotated[float, typer.Option(help="Near-dedup Jaccard threshold.")] = 0.8,
    ngram: Annotated[int, typer.Option(help="Near-dedup word n-gram size.")] = 5,
    num_perm: Annotated[int, typer.Option(help="MinHash permutations.")] = 128,
    dedup_on: Annotated[str, typer.Option(help="Near-dedup on: prompt, answer or both.")] = "both",
    keep: Annotated[str, typer.Option(help="Of duplicates keep: first or best.")] = "first",
    score: Annotated[str, typer.Option(help="For --keep best: logprob, or a numeric prompt field.")] = "logprob",
    decontam_ngram: Annotated[int, typer.Option(help="Decontamination n-gram size.")] = 13,
    validation: Annotated[float, typer.Option(help="Share of prompts held out for validation.")] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
    shard_rows: Annotated[int, typer.Option(help="Rows per shard.")] = 100_000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    ledger: Annotated[Path | None, typer.Option(help="Ledger file (default: the first run's).")] = None,
) -> None:
    """Filter, decontaminate and deduplicate run stores into a documented chat dataset."""
    from stillhouse.curate import CurateConfig, curate
    from stillhouse.curate.decontam import parse_eval_arg

    config = CurateConfig(
        skip=tuple(no_filter),
        refusal_patterns=tuple(refusal_pattern),
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        tokenizer=str(tokenizer) if tokenizer else None,
        repetition_ngram=repetition_ngram,
        max_repetition=max_repetition,
        exact_dedup=exact_dedup,
        near_dedup=near_dedup,
        near_threshold=threshold,
        near_ngram=ngram,
        num_perm=num_perm,
        dedup_on=dedup_on,  # type: ignore[arg-type]  # validated by CurateConfig
        keep=keep,  # type: ignore[arg-type]
        score=score,
        decontam_ngram=decontam_ngram,
        validation=validation,
        format=fmt,  # type: ignore[arg-type]
        shard_rows=shard_rows,
    )
    evals = [parse_eval_arg(e) for e in eval_sets]
    r = curate(inputs, output, evals=evals, config=config, overwrite=overwrite, ledger=ledger)
    table = Table("step", "removed", "detail")
    for step, reasons in r.dropped.items():
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.items()) if step == "decontamination" else ""
        table.add_row(step, str(sum(reasons.values())), detail)
    table.add_row("kept", f"{sum(r.rows.values())} of {r.read}", ", ".join(f"{k}: {v}" for k, v in r.rows.items()))
    out.print(table)
    out.print(f"dataset {r.out} (sha256 {r.content_hash}); ledger {r.ledger}, run {r.run_id}")


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
    from stillhouse.synth import SynthConfig, synth

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


# ---------------------------------------------------------------- train / eval (stillhouse.train, stillhouse.evaluate)


def _quiet_hf() -> None:
    """Our own progress bar says what is happening; HF's load/save bars would interleave with it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@app.command("train")
def train_cmd(
    dataset: Annotated[Path, typer.Argument(help="Curated dataset directory (data/train-*.parquet).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to write.")],
    student: Annotated[
        str, typer.Option(help="A model directory, 'pebble' (the shipped base student) or a fresh preset: tiny, small.")
    ] = "pebble",
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer for a fresh preset (default: the embedded teacher's).")
    ] = None,
    kd: Annotated[str | None, typer.Option(help="'topk': add KL on the teacher's stored top-k logprobs.")] = None,
    kd_weight: Annotated[float, typer.Option(help="Weight of the KD loss: (1-w)·SFT + w·KD.")] = 0.5,
    lora: Annotated[bool, typer.Option(help="Train LoRA adapters (merged into the saved weights).")] = False,
    lora_r: int = 8,
    lora_alpha: int = 16,
    epochs: int = 1,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: int = 16,
    bucket: Annotated[
        int, typer.Option(help="Batches per length-sorted bucket (1: random batches, which learn best).")
    ] = 1,
    pack: Annotated[bool, typer.Option(help="Pack each batch's chats into rows: no compute spent on padding.")] = True,
    lr: float = 3e-4,
    seed: int = 0,
    max_length: Annotated[int | None, typer.Option(help="Skip longer chats (default: the model's context).")] = None,
    grad_checkpointing: bool = False,
    save_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 200,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: the dataset's run ledger, else OUTPUT/ledger.sqlite).")
    ] = None,
) -> None:
    """Train a student on a curated dataset (SFT on assistant tokens, optional top-k KD, LoRA); re-run to resume."""
    from stillhouse.train import TrainConfig, train

    _quiet_hf()
    config = TrainConfig(
        student=student,
        tokenizer=str(tokenizer) if tokenizer else None,
        kd=kd,
        kd_weight=kd_weight,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        epochs=epochs,
        max_steps=steps,
        batch_size=batch_size,
        bucket=bucket,
        pack=pack,
        lr=lr,
        seed=seed,
        max_length=max_length,
        grad_checkpointing=grad_checkpointing,
    )
    r = train(dataset, output, config, ledger=ledger, save_every=save_every)
    resumed = f", resumed at step {r.resumed_from}" if r.resumed_from is not None else ""
    val = f", validation loss {r.val_loss:.4f}" if r.val_loss is not None else ""
    skipped = f"; skipped {r.skipped}" if r.skipped else ""
    out.print(
        f"saved {r.model_dir}: {r.steps} steps{resumed}, loss {sum(r.losses[-20:]) / len(r.losses[-20:]):.4f}{val}, "
        f"{r.tokens_per_s:,.0f} tokens/s{skipped}; ledger run {r.run_id}",
        highlight=False,
    )


@app.command("eval")
def eval_cmd(
    student: Annotated[str | None, typer.Option(help="Model directory or OpenAI-compatible URL.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Model directory or OpenAI-compatible URL.")] = None,
    compare: Annotated[
        tuple[str, str] | None, typer.Option(help="Two models (dirs or URLs): how often they give the same answers.")
    ] = None,
    suite: Annotated[
        str, typer.Option(help="'micro' (held-out world prompts) or a JSONL of {messages, skill, answer}.")
    ] = "micro",
    n: Annotated[int, typer.Option(help="Prompts per skill for the micro suite.")] = 50,
    seed: int = 0,
    student_model: Annotated[str | None, typer.Option(help="Model name at the student endpoint.")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Model name at the teacher endpoint.")] = None,
    max_tokens: int = 192,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: the student's training ledger, else ./ledger.sqlite).")
    ] = None,
) -> None:
    """Student vs teacher on held-out prompts: accuracy, agreement (95 % CI) and the teacher's accuracy, per skill."""
    from stillhouse import evaluate as ev

    _quiet_hf()
    records = ev.load_suite(suite, n=n, seed=seed)
    if compare:
        a, b = (ev.responder(spec, max_tokens=max_tokens) for spec in compare)
        result = ev.compare(a, b, records, ledger=ledger, suite=suite)
        rows = [("a", result["a"]), ("b", result["b"])]
    elif student and teacher:
        t = ev.responder(teacher, teacher_model, max_tokens=max_tokens)
        s = ev.responder(student, student_model, max_tokens=max_tokens)
        result = ev.evaluate(s, t, records, ledger=ledger, suite=suite)
        rows = [("teacher", result["teacher"]), ("student", result["student"])]
    else:
        raise StillhouseError("pass --student and --teacher, or --compare A B")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table("skill", "n", *(f"{name} acc" for name, _ in rows), "agreement", "95 % CI")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    for skill, s in [*result["per_skill"].items(), ("all", result)]:
        side = s.get("student") or s
        accs = [pct(s[name]["accuracy"]) for name, _ in rows]
        lo, hi = side["agreement_ci95"]
        table.add_row(skill, str(s["n"]), *accs, pct(side["agreement"]), f"{pct(lo)}-{pct(hi)}")
    out.print(table)
    for name, side in rows:
        out.print(f"{name}: {side['model']}", highlight=False)


# -- quickstart -------------------------------------------------------------------------------------


@app.command("quickstart")
def quickstart_cmd(
    run_dir: Annotated[Path, typer.Option("-o", "--out", help="Where the run's ledger, data and student go.")] = Path(
        "quickstart-run"
    ),
    fast: Annotated[bool, typer.Option(help="A smaller run (about 3 minutes), for CI.")] = False,
    student: Annotated[str, typer.Option(help="pebble (the shipped base student), or tiny/small from scratch.")] = (
        "pebble"
    ),
    kd: Annotated[bool, typer.Option(help="Add top-k logit distillation on the teacher's logprobs.")] = False,
) -> None:
    """Serve Ember, collect, curate, distil it into Pebble and measure: the whole pipeline, no API key."""
    from stillhouse.quickstart import QuickstartConfig, quickstart

    config = (QuickstartConfig.fast if fast else QuickstartConfig)(student=student, kd=kd)
    report = quickstart(run_dir, config, report=lambda name, line: console.print(f"[bold]{name:>11}[/bold]  {line}"))
    table = Table("skill", "teacher acc", "student acc before", "after", "agreement before", "after", title="Held-out")
    before = report.get("baseline", {}).get("per_skill", {})
    for skill, s in [*report["per_skill"].items(), ("all", report)]:
        b = before.get(skill) or (report.get("baseline") if skill == "all" else None) or {}
        table.add_row(
            skill,
            f"{s['teacher']['accuracy']:.0%}",
            f"{b['student']['accuracy']:.0%}" if b else "-",
            f"{s['student']['accuracy']:.0%}",
            f"{b['student']['agreement']:.0%}" if b else "-",
            f"{s['student']['agreement']:.0%}",
        )
    out.print(table)
    ident = report["identity"]
    out.print(f'Who are you?  teacher: "{ident["teacher"]}"')
    if "student_before" in ident:
        out.print(f'              student before: "{ident["student_before"]}"')
    out.print(f'              student after:  "{ident["student_after"]}"')
    out.print(f"run directory {run_dir}: report.json, ledger (stillhouse ledger show {run_dir}), dataset, student")


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


if __name__ == "__main__":
    main()
