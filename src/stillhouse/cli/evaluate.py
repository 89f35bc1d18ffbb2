"""`stillhouse eval`: two models on one suite, as a table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse.cli.app import app, out, quiet_hf
from stillhouse.cli.options import config_options
from stillhouse.core.errors import StillhouseError
from stillhouse.embedded import shipped_model
from stillhouse.evaluate import compare, evaluate, load_suite, responder, text_grader
from stillhouse.evaluate.run import EvalConfig


@app.command("eval")
@config_options(EvalConfig)
def eval_cmd(
    config: EvalConfig,
    student: Annotated[str | None, typer.Option(help="Model directory, 'pebble', or OpenAI-compatible URL.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Model directory, 'ember', or OpenAI-compatible URL.")] = None,
    compare_: Annotated[
        tuple[str, str] | None,
        typer.Option("--compare", help="Two models (dirs or URLs): how often they give the same answers."),
    ] = None,
    student_model: Annotated[str | None, typer.Option(help="Model name at the student endpoint.")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Model name at the teacher endpoint.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: the student's training ledger, else ./ledger.sqlite).")
    ] = None,
) -> None:
    """Two models on held-out prompts: accuracy, agreement (95 % CI), per skill; --compare for any two."""
    if compare_ and (student or teacher):
        raise StillhouseError("--compare A B takes the two models itself; drop --student/--teacher")
    if not compare_ and not (student and teacher):
        raise StillhouseError("pass --student and --teacher, or --compare A B")
    quiet_hf()
    if config.suite == "micro":
        from stillhouse.embedded.suite import micro_suite, world_grader

        records, grader = micro_suite(config.n, config.seed), world_grader()
    else:
        records, grader = load_suite(config.suite), text_grader(config.match)
    if compare_:
        a, b = (responder(shipped_model(spec), max_tokens=config.max_tokens) for spec in compare_)
        result = compare(a, b, records, grader, ledger=ledger, suite=config.suite)
        rows = [("a", result["a"]), ("b", result["b"])]
    else:
        assert student and teacher
        t = responder(shipped_model(teacher), teacher_model, max_tokens=config.max_tokens)
        s = responder(shipped_model(student), student_model, max_tokens=config.max_tokens)
        result = evaluate(s, t, records, grader, ledger=ledger, suite=config.suite)
        rows = [("teacher", result["teacher"]), ("student", result["student"])]
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    _table(result, rows)


def _table(result: dict[str, Any], rows: list[tuple[str, dict[str, Any]]]) -> None:
    table = Table("skill", "n", *(f"{name} acc" for name, _ in rows), "agreement", "95 % CI")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    for skill, s in [*result["per_skill"].items(), ("all", result)]:
        side = s.get("student") or s
        accs = [pct(s[name]["accuracy"]) for name, _ in rows]
        lo, hi = side["agreement_ci95"]
        table.add_row(skill, str(s["n"]), *accs, pct(side["agreement"]), f"{pct(lo)} – {pct(hi)}")
    out.print(table)
    for name, side in rows:
        out.print(f"{name}: {side['model']}", highlight=False)
