"""`stillhouse train` and `stillhouse eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, out, quiet_hf
from stillhouse.core.errors import StillhouseError


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
    from stillhouse.embedded import resolve_student
    from stillhouse.train import TrainConfig, train

    quiet_hf()
    student, tok = resolve_student(student, str(tokenizer) if tokenizer else None)
    config = TrainConfig(
        student=student,
        tokenizer=tok,
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

    quiet_hf()
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
