"""`stillhouse quickstart`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out


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
    from stillhouse.embedded.quickstart import QuickstartConfig, quickstart

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
