"""Train a small chat model from scratch on an endless stream of the micro-world's chats, nanoGPT-plain.

Used to build the shipped models (scripts/train_embedded.py). Encoding (loss on the assistant's tokens),
packing random batches into rows, the loss and checkpoints are train/'s; what is specific to training
from scratch lives here: a data stream that is a pure function of (seed, step), so a run resumed from a
checkpoint sees the very batches an unbroken one would, and the schedule (warm-up, cosine to a tenth).
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from stillhouse.core.ids import canonical_json
from stillhouse.embedded.world import CURRENT, Persona, Phrasings, grade, make_prompts, training_chats
from stillhouse.serve.generate import greedy
from stillhouse.train.checkpoints import resume, save_checkpoint
from stillhouse.train.data import Collator, build_examples
from stillhouse.train.loop import autocast, uses_bf16
from stillhouse.train.losses import batch_loss


@dataclass(frozen=True)
class PretrainConfig:
    """What shapes the weights; a resumed run must match it exactly."""

    steps: int = 15000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.1
    seed: int = 0
    init: str = ""  # sha256 of the weights a continued run starts from; "" for a fresh initialisation


def _data_seed(config: PretrainConfig, step: int) -> str:
    """Batch `step`'s seed: a continued run draws chats of its own, not the first run's again."""
    return f"{config.seed}:{step}" if not config.init else f"{config.seed}:{config.init[:16]}:{step}"


def lr_scale(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak over `config.steps`."""
    progress = min(step / config.steps, 1.0)
    return min(1.0, (step + 1) / config.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def pretrain(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    persona: Persona,
    config: PretrainConfig,
    checkpoints: Path,
    *,
    phrasings: Phrasings = CURRENT,
    checkpoint_minutes: float = 10.0,
    stop_after_minutes: float | None = None,
    log_every: int = 50,
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """AdamW on `persona`'s chats until `config.steps`, resuming from the last checkpoint in `checkpoints`.

    A checkpoint (model, optimizer, scheduler, RNG; the step, tokens and losses) is written every
    `checkpoint_minutes`, when `stop_after_minutes` of this session are up, and on Ctrl-C or SIGTERM (after
    the step in flight), so a run can span sessions and stopping one early loses nothing.
    Returns the state: {"step", "tokens", "losses", "minutes"} (minutes summed over sessions)."""
    acc = Accelerator()
    fingerprint = hashlib.sha256(
        canonical_json([asdict(config), persona.name, hashlib.sha256(repr(phrasings).encode()).hexdigest()]).encode()
    ).hexdigest()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=acc.device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_scale(s, config))
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "losses": [], "minutes": 0.0}
    if (saved := resume(acc, checkpoints, fingerprint, "re-run with those, or pass another --work")) is not None:
        state = saved
        print(f"resumed {persona.name} at step {state['step']} ({state['tokens']:,} tokens)", flush=True)
    collate = Collator(tok.pad_token_id, acc.device)

    def save() -> None:
        save_checkpoint(acc, checkpoints, state["step"], state | {"fingerprint": fingerprint}, keep=1)
        if on_checkpoint is not None:
            on_checkpoint(state["step"])
        model.train()

    started = last_save = time.time()
    minutes_before, tokens_before = state["minutes"], state["tokens"]
    interrupted = threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, lambda *_: interrupted.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    model.train()
    bf16 = uses_bf16("auto")
    while state["step"] < config.steps:
        chats = training_chats(persona, _data_seed(config, state["step"]), config.batch_size, phrasings)
        batch = collate(build_examples([{"messages": c} for c in chats], tok, None, kd=False)[0])
        with autocast(bf16, acc.device):
            loss = batch_loss(model, batch, 0.0)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += batch["tokens"]
        state["losses"].append(round(loss.item(), 5))
        elapsed = time.time() - started
        state["minutes"] = round(minutes_before + elapsed / 60, 2)
        if state["step"] % log_every == 0:
            tail = state["losses"][-log_every:]
            print(
                f"{persona.name} step {state['step']} loss {sum(tail) / len(tail):.4f} "
                f"lr {scheduler.get_last_lr()[0]:.2e} {(state['tokens'] - tokens_before) / elapsed:,.0f} tok/s "
                f"{elapsed / 60:.1f} min",
                flush=True,
            )
        out_of_time = interrupted.is_set() or (stop_after_minutes is not None and elapsed > 60 * stop_after_minutes)
        if out_of_time or time.time() - last_save > 60 * checkpoint_minutes:
            save()
            last_save = time.time()
        if out_of_time:
            break
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    return state


def skill_accuracy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    persona: Persona,
    per_skill: int = 50,
    split: str = "heldout",
    seed: int = 1234,
    skills: tuple[str, ...] | None = None,
    phrasings: Phrasings = CURRENT,
) -> dict[str, float]:
    """Fraction of greedy replies graded correct, per skill (default: the persona's), on `per_skill` prompts each."""
    skills = skills or persona.skills
    records = make_prompts(
        per_skill * len(skills), skills=skills, split=split, seed=seed, persona=persona, phrasings=phrasings
    )
    replies = greedy(model, tok, [r["messages"] for r in records], max_new_tokens=120, batch_size=64)
    hits: dict[str, list[bool]] = {s: [] for s in skills}
    for r, text in zip(records, replies, strict=True):
        hits[r["skill"]].append(grade(r["skill"], r["answer"], text))
    return {s: sum(h) / len(h) for s, h in hits.items()}


def save(model: PreTrainedModel, tok: PreTrainedTokenizerBase, out: Path, record: dict[str, Any]) -> None:
    """A standard HF directory (safetensors, tokenizer with chat template, eos = <|end|>) and, beside the
    weights, training.json: how it was trained (steps, tokens, minutes, config) and what it scored."""
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
