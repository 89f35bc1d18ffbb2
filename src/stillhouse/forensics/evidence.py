"""Every forensic verdict goes through here: one `forensics` run in the ledger and, on request, an evidence file.

An evidence file holds the inputs (with hashes), the test, the statistic, the p-value and the null, plus the
ledger head it was made at, so `stillhouse ledger verify` can tell whether the ledger was cut after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stillhouse.core.ids import now
from stillhouse.core.outputs import atomic_write, check_output
from stillhouse.provenance.ledger import Ledger, stage_run

EVIDENCE_VERSION = 1


def check_evidence(path: Path | None, overwrite: bool) -> None:
    """Refuse before any work, not after it, to replace an evidence file or to write where nothing can be."""
    if path is not None:
        check_output(path, overwrite=overwrite)


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
    check_evidence(evidence, overwrite)
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
    verdict |= start | result | {"ledger_anchor": anchor}
    if evidence is not None:
        with atomic_write(evidence) as tmp:
            tmp.write_text(json.dumps(verdict, indent=2, default=str) + "\n")
    return verdict
