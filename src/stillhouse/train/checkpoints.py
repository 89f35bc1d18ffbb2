"""Checkpoints that a kill or a full disk cannot leave half-written: model, optimizer, scheduler and RNG
states through accelerate, plus the caller's own state as JSON."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from stillhouse.core.errors import StillhouseError

CHECKPOINTS = "checkpoints"
# Checkpoints drop the tied lm_head copy of the embeddings, as they should; accelerate warns on every save.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first; a half-written one (still named .tmp) is never listed."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").exists())


def save_checkpoint(acc: Accelerator, root: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write to a temporary name and rename when complete, so a kill or a full disk never leaves a
    checkpoint that looks whole but is not; the previous ones stay until the new one is in place."""
    final, tmp = root / f"step-{step:08d}", root / f".step-{step:08d}.tmp"
    try:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            (tmp / "state.json").write_text(json.dumps(state))
            os.replace(tmp, final)
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        last = list_checkpoints(root)
        kept = f"the last complete checkpoint ({last[-1].name}) is intact" if last else "no checkpoint was written yet"
        raise StillhouseError(
            f"cannot write a checkpoint in {root}: {e.strerror or e} (is the disk full?); {kept}, "
            "free space and re-run the same command to resume"
        ) from e
    acc.wait_for_everyone()
    return final


def resume(acc: Accelerator, root: Path, fingerprint: str, hint: str) -> dict[str, Any] | None:
    """The state saved with the last complete checkpoint under `root`, with model, optimizer, scheduler and
    RNG states loaded into `acc`; None when there is none. One written by another run (other settings or
    data: another fingerprint) is refused, with `hint` saying what to do."""
    found = list_checkpoints(root)
    if not found:
        return None
    saved = json.loads((found[-1] / "state.json").read_text())
    if saved.get("fingerprint") != fingerprint:
        raise StillhouseError(f"{root} holds a run with other settings or data; {hint}")
    acc.load_state(str(found[-1]))
    return saved
