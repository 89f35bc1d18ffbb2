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
        int, typer.Option(help="Batches per length-sorted bucket: less padding; 1 gives random batches.")
    ] = 64,
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
