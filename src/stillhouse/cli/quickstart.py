"""`stillhouse quickstart`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse.cli.app import app, console, out, quiet_hf
from stillhouse.core.errors import StillhouseError


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
    train_prompts: Annotated[int | None, typer.Option(min=1, help="Prompts to collect (default: the size's).")] = None,
    eval_per_skill: Annotated[int | None, typer.Option(min=1, help="Held-out prompts per skill.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps (default: the size's).")] = None,
    forensics: Annotated[
        bool,
        typer.Option(
            help="Serve Ember watermarked; test the student and Pebble-before for it, their identity, their lineage."
        ),
    ] = False,
    delta: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="The watermark's strength, with --forensics. Default 8: Ember's scratchpads carry no weaker "
            "watermark for a student to learn (6 convicts at 1 %, for less accuracy lost; docs/forensics.md).",
        ),
    ] = None,
) -> None:
    """Serve Ember, collect, curate, distil it into Pebble and measure: the whole pipeline, no API key."""
    if delta is not None and not forensics:  # before the imports: they take seconds
        raise StillhouseError("--delta sets the watermark that --forensics serves; pass --forensics too")
    from stillhouse.embedded.quickstart import QuickstartConfig, quickstart
    from stillhouse.embedded.report import headline, pct

    quiet_hf()
    sizes = {"train_prompts": train_prompts, "eval_per_skill": eval_per_skill, "steps": steps, "delta": delta}
    overrides: dict[str, Any] = {k: v for k, v in sizes.items() if v is not None}
    overrides |= {"student": student, "kd": kd, "forensics": forensics}
    config = (QuickstartConfig.fast if fast else QuickstartConfig)(**overrides)
    report = quickstart(run_dir, config, report=lambda name, line: console.print(f"[bold]{name:>11}[/bold]  {line}"))
    phrasings = report["heldout_phrasings"]
    base = report.get("baseline") or {}
    table = Table(
        "skill",
        "teacher acc",
        "agreement before",
        "after",
        "after, new phrasings",
        title="Agreement with the teacher, held-out prompts",
    )
    for skill, s in [*report["per_skill"].items(), ("all", report)]:
        b = (base.get("per_skill", {}).get(skill) if skill != "all" else base) or {}
        p = phrasings["per_skill"][skill] if skill != "all" else phrasings
        table.add_row(
            skill,
            pct(s["teacher"]["accuracy"]),
            pct(b["student"]["agreement"]) if b else "-",
            pct(s["student"]["agreement"]),
            pct(p["student"]["agreement"]),
        )
    out.print(table)
    before = f"{headline(base)} -> " if base else ""
    out.print(f"agreement on held-out prompts: {before}{headline(report)}", highlight=False, soft_wrap=True)
    out.print(f"on held-out phrasings:         {headline(phrasings)}", highlight=False, soft_wrap=True)
    ident = report["identity"]
    out.print(f'Who are you?  teacher: "{ident["teacher"]}"', highlight=False, soft_wrap=True)
    if "student_before" in ident:
        out.print(f'              student before: "{ident["student_before"]}"', highlight=False, soft_wrap=True)
    out.print(f'              student after:  "{ident["student_after"]}"', highlight=False, soft_wrap=True)
    for who, verdict in (report.get("forensics") or {}).get("verdicts", {}).items():
        radio, named = verdict["radioactivity"], verdict["identity"]
        out.print(
            f"forensics, {who.replace('_', ' ')}: watermark radioactivity {radio['summary']} (null median p "
            f"{radio['null']['median_p']:.2f}); names {named['top'] or 'no known identity'}; lineage: "
            f"{verdict['lineage']['summary']}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"run directory {run_dir}: report.html, report.json, ledger (stillhouse ledger show {run_dir}), "
        "dataset, student",
        highlight=False,
        soft_wrap=True,
    )
