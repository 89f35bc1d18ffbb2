"""`provenance MODEL_DIR`: where a trained model's knowledge came from, answered from the ledgers.

The chain is joined by identities, not by trust in the cards: the model's card names its train run;
that run's start entry names the dataset's content hash; the curate run whose end entry produced that
hash names its source collect runs; their entries name teacher, terms, purpose and what was spent.
Every ledger on the way is verified, against the anchors the model and dataset recorded, so a cut tail
or a rewritten entry anywhere is named beside the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stillhouse.core.dataset import CARD_FILE, read_card
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.ledger import Anchor, Entry, Ledger

MODEL_META = "stillhouse.json"  # what train writes beside a model's weights


def artifact_anchors(path: Path) -> list[Anchor]:
    """The ledger heads an artifact recorded: a model directory, a dataset directory, or an evidence JSON file."""
    found: list[Anchor] = []
    meta = _read_json(path / MODEL_META) if path.is_dir() else _read_json(path)
    for key in ("ledger_anchor", "dataset_anchor"):
        if anchor := Anchor.from_json(meta.get(key), f"{path} ({key.replace('_', ' ')})"):
            found.append(anchor)
    card = read_card(path) if path.is_dir() else {}
    if anchor := Anchor.from_json(card.get("ledger_anchor"), f"the dataset card of {path}"):
        found.append(anchor)
    if not found:
        raise StillhouseError(f"{path} records no ledger anchor: not a dataset, model or evidence file made here")
    return found


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StillhouseError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def _by_run(entries: list[Entry]) -> dict[str, dict[str, dict[str, Any]]]:
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for e in entries:
        runs.setdefault(e.run_id, {})[e.kind.rsplit(".", 1)[-1]] = e.body | {"at": e.at}
    return runs


def provenance(model_dir: str | Path) -> dict[str, Any]:
    """Teachers, terms, purposes, collect runs and exchanges, curate drops, the exact dataset, and the chain's state."""
    model_dir = Path(model_dir)
    meta = _read_json(model_dir / MODEL_META)
    if not meta:
        raise StillhouseError(f"{model_dir} has no {MODEL_META}: it was not trained by stillhouse train")
    led_path = Path(str(meta.get("ledger") or ""))
    if not led_path.is_file():
        raise StillhouseError(f"the ledger {model_dir} names ({led_path}) is missing; provenance cannot be answered")
    anchors = artifact_anchors(model_dir)
    dataset_dir = Path(str(meta.get("dataset") or ""))
    if (dataset_dir / CARD_FILE).is_file():
        anchors += [a for a in artifact_anchors(dataset_dir) if a.source.startswith("the dataset card")]
    checked: dict[str, list[str]] = {}
    entries: list[Entry] = []
    for path in [led_path.resolve()]:
        with Ledger(path, readonly=True) as led:
            mine = [a for a in anchors if Path(a.ledger) == path.resolve()]
            checked[str(path)] = [str(p) for p in led.verify(mine)]
            entries += led.entries()
    runs = _by_run(entries)

    train = runs.get(str(meta.get("run_id")), {})
    dataset_hash = meta.get("dataset_hash")
    curate_id, curate = None, {}
    for rid, r in runs.items():  # the last curate run that wrote exactly this dataset
        if rid.startswith("curate") and (r.get("end") or {}).get("outputs", {}).get("content_hash") == dataset_hash:
            curate_id, curate = rid, r
    source_runs = (curate.get("end") or {}).get("source_runs") or []
    inputs = (curate.get("start") or {}).get("inputs") or []
    for extra in {i.get("ledger") for i in inputs if i.get("ledger")} - set(checked):
        with Ledger(extra, readonly=True) as led:
            checked[extra] = [str(p) for p in led.verify()]
            runs |= _by_run(led.entries())
    collects = [_collect_summary(rid, runs.get(rid, {})) for rid in source_runs]
    problems = [f"{path}: {p}" for path, ps in checked.items() for p in ps]
    if not train:
        problems.append(f"train run {meta.get('run_id')} is not in {led_path} (its entries were deleted?)")
    if dataset_hash and not curate_id:
        problems.append(f"no curate run in the ledgers produced the dataset {dataset_hash[:12]}…")
    return {
        "model": {
            "path": str(model_dir),
            "weights_hash": meta.get("model_hash"),
            "train_run": meta.get("run_id"),
            "student": meta.get("student"),
            "steps": (train.get("end") or {}).get("steps"),
            "method": (train.get("start") or {}).get("config", {}).get("kd") or "sft",
        },
        "dataset": {
            "path": str(dataset_dir),
            "content_hash": dataset_hash,
            "curate_run": curate_id,
            "read": (curate.get("end") or {}).get("read"),
            "rows": (curate.get("end") or {}).get("outputs", {}).get("rows"),
            "dropped": (curate.get("end") or {}).get("dropped", {}),
        },
        "collect_runs": collects,
        "teachers": unique(c["teacher"] for c in collects),
        "terms": unique(c["terms"] for c in collects),
        "purposes": unique(c["purpose"] for c in collects),
        "permissions": unique(c["permission"] for c in collects),
        "chain": {"ledgers": sorted(checked), "anchors": len(anchors), "intact": not problems, "problems": problems},
    }


def _collect_summary(run_id: str, run: dict[str, dict[str, Any]]) -> dict[str, Any]:
    start, end = run.get("start") or {}, run.get("end") or {}
    teacher = start.get("teacher") or {}
    return {
        "run_id": run_id,
        "teacher": teacher.get("model"),
        "host": teacher.get("host"),
        "base_url": teacher.get("base_url"),
        "terms": start.get("terms"),
        "purpose": start.get("purpose"),
        "permission": start.get("permission"),
        "exchanges": end.get("succeeded"),
        "failed": end.get("failed"),
        "tokens": (end.get("prompt_tokens") or 0) + (end.get("completion_tokens") or 0) if end else None,
        "cost": end.get("cost"),
        "found": bool(start),
    }


def unique(values: Any) -> list[Any]:
    """The distinct, non-empty values, in first-seen order."""
    seen: list[Any] = []
    for v in values:
        if v not in (None, "") and v not in seen:
            seen.append(v)
    return seen
