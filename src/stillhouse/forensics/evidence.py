"""Every forensic verdict goes through here: one `forensics` run in the ledger and, on request, an evidence file.

An evidence file holds the inputs (with hashes), the test, the statistic, the p-value and the null, plus the
ledger head it was made at, so `stillhouse ledger verify` can tell whether the ledger was cut after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import now
from stillhouse.provenance.ledger import Ledger, stage_run

EVIDENCE_VERSION = 1


def check_output(path: Path | None, overwrite: bool) -> None:
    """Refuse before any work, not after it, to replace an evidence file."""
    if path is not None and path.exists() and not overwrite:
        raise StillhouseError(f"{path} already exists; choose another --evidence path or pass --overwrite")


def record_verdict(
    test: str,
    start: dict[str, Any],
    compute: Callable[[], dict[str, Any]],
    *,
    ledger: str | Path | None = None,
    evidence: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run `compute` as a ledgered `forensics` run and return (and optionally write) its verdict.

    `start` says what was tested against what (never a secret); the verdict's `p_value` and `summary` go into
    the ledger's end entry, the whole verdict into the evidence file.
    """
    evidence = Path(evidence) if evidence is not None else None
    check_output(evidence, overwrite)
    anchor = None
    if ledger is None:
        result = compute()
    else:
        with Ledger(ledger) as led:
            with stage_run(led, "forensics", {"test": test, **start}) as run:
                result = compute()
                run.end = {"test": test, "p_value": result.get("p_value"), "summary": result.get("summary")}
                if evidence is not None:
                    run.end["evidence"] = str(evidence)
            anchor = led.head().to_json()
    verdict = {"kind": "stillhouse.evidence", "version": EVIDENCE_VERSION, "test": test, "created": now()}
    verdict |= start | result | {"anchor": anchor}
    if evidence is not None:
        _write_atomic(evidence, json.dumps(verdict, indent=2, default=str) + "\n")
    return verdict


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
