"""The dataset card: README.md with the YAML `configs` that `datasets.load_dataset(DIR)` reads, and
what a reader needs to trust the data: teacher, declared terms and purpose, every step's counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stillhouse.provenance.ledger import Anchor, Ledger, ledger_path
from stillhouse.provenance.lineage import unique


def collect_runs(sources: Sequence[dict[str, Any]], run_ids: set[str], extra: Path | None) -> list[dict[str, Any]]:
    """Ledger summaries of the collect runs the examples came from: teacher, terms, purpose, permission."""
    ledgers = [ledger_path(s["path"]) for s in sources if s["kind"] == "run"]
    if extra is not None:
        ledgers.append(extra)
    found: dict[str, dict[str, Any]] = {}
    for path in dict.fromkeys(ledgers):
        if not path.exists():
            continue
        with Ledger(path, readonly=True) as led:
            for run in led.runs():
                if run["run_id"] in run_ids:
                    found.setdefault(run["run_id"], {**run, "ledger": str(path)})
    return [found[r] for r in sorted(found)]


def block(
    run_id: str,
    content_hash: str,
    read: int,
    rows: Mapping[str, int],
    dropped: Mapping[str, Mapping[str, int]],
    source_runs: Sequence[str],
    runs: Sequence[dict[str, Any]],
    anchor: Anchor,
) -> dict[str, Any]:
    """The card's `stillhouse:` front matter: what train, the model card and `provenance` read back."""
    return {
        "run_id": run_id,
        "content_hash": content_hash,
        "read": read,
        "rows": dict(rows),
        "steps": {step: dict(reasons) for step, reasons in dropped.items()},
        "source_runs": list(source_runs),
        "collect_runs": [
            {k: r.get(k) for k in ("run_id", "stage", "teacher", "terms", "purpose", "permission", "ledger")}
            for r in runs
        ],
        "teachers": unique(r.get("teacher") for r in runs),
        "terms": unique(r.get("terms") for r in runs),
        "purposes": unique(r.get("purpose") for r in runs),
        "permissions": unique(r.get("permission") for r in runs),
        "ledger_anchor": anchor.to_json(),
    }


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name") or value.get("id") or ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value).replace("|", "\\|") if value not in (None, "") else "—"


def render(
    *,
    name: str,
    run_id: str,
    ledger: Path,
    read: int,
    splits: Mapping[str, Sequence[str]],
    rows: Mapping[str, int],
    dropped: Mapping[str, Mapping[str, int]],
    settings: Mapping[str, dict[str, Any]],
    sources: Sequence[dict[str, Any]],
    runs: Sequence[dict[str, Any]],
    content_hash: str,
    fmt: str,
) -> str:
    """The card's prose: what a reader needs to trust the data (the front matter is `block`'s)."""
    lines = [f"# {name}", ""]
    kept = sum(rows.values())
    lines += [
        f"Chat-format training data curated by stillhouse (run `{run_id}`): {kept:,} examples kept "
        f'of {read:,} read. Load it with `datasets.load_dataset("path/to/{name}")` or '
        f'`load_dataset("{fmt}", data_dir=...)`; each row has `messages` (the last turn is the teacher\'s '
        "answer), `id`, `prompt_id`, `source` (the collect run) and `meta` (the prompt's own fields, as JSON).",
        "",
        "## Teacher, terms and purpose",
        "",
    ]
    if runs:
        lines += [
            "| collect run | teacher | base URL | terms | purpose | permission |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in runs:
            t = r.get("teacher") or {}
            lines.append(
                f"| `{r['run_id']}` | {_cell(t.get('model'))} ({_cell(t.get('host'))}) | {_cell(t.get('base_url'))} "
                f"| {_cell(r.get('terms'))} | {_cell(r.get('purpose'))} | {_cell(r.get('permission'))} |"
            )
    else:
        lines.append("No collect run in a ledger matches these examples: teacher, terms and purpose are unknown.")
    lines += ["", "## Sources", "", "| input | kind | provenance |", "| --- | --- | --- |"]
    for s in sources:
        proof = f"ledger head `{s['ledger_head']}`" if s.get("ledger_head") else f"sha256 `{s.get('sha256', '—')}`"
        lines.append(f"| `{s['path']}` | {s['kind']} | {proof} |")
    lines += ["", "## What was removed", "", "| step | removed | settings |", "| --- | --- | --- |"]
    for step, count in dropped.items():
        lines.append(f"| {step} | {sum(count.values()):,} | {_settings(settings.get(step, {}))} |")
    lines.append(f"| **kept** | **{kept:,}** of {read:,} | |")
    contamination = dropped.get("decontamination")
    if contamination is not None:
        sets = settings["decontamination"]["sets"]
        lines += ["", "## Decontamination", "", "| evaluation set | file | items | examples removed |"]
        lines.append("| --- | --- | --- | --- |")
        for set_name, info in sets.items():
            lines.append(f"| {set_name} | `{info['path']}` | {info['items']:,} | {contamination.get(set_name, 0):,} |")
    lines += ["", "## Files", "", "| split | rows | shards |", "| --- | --- | --- |"]
    for split, files in splits.items():
        lines.append(f"| {split} | {rows.get(split, 0):,} | {len(files)} |")
    lines += [
        "",
        f"Content hash (sha256 over the shard files): `{content_hash}`",
        "",
        f"Provenance: ledger `{ledger}`, run `{run_id}`; check it with `stillhouse ledger verify {ledger}`.",
        "",
    ]
    return "\n".join(lines)


def _settings(values: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in values.items() if k not in ("sets", "patterns")}
    if "patterns" in values:
        shown["patterns"] = len(values["patterns"])
    return ", ".join(f"{k}={v}" for k, v in shown.items()).replace("|", "\\|") or ""
