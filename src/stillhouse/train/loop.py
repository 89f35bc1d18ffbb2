"""Train a student on a curated dataset: SFT on the assistant tokens, optionally mixed with top-k
logit distillation from the teacher's stored logprobs.

One plain loop over `accelerate.Accelerator`, so the same code runs on one CPU, one GPU, or several
GPUs under `accelerate launch` / `torchrun`. It is ours rather than TRL's because packing each random
batch's chats into rows (no compute on padding) is about 3x faster on a CPU at the same loss, where
TRL's padding-free packing crawls and its length grouping learns worse (bench/train.py). Checkpoints hold the
model, optimizer, scheduler and RNG states; the data order is a pure function of (seed, epoch), so
the step number alone puts a resumed run back at the same batch and the loss curve continues exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import get_cosine_schedule_with_warmup

from stillhouse.core.dataset import ChatDataset, load_dataset
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json, new_run_id
from stillhouse.core.outputs import check_writable
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger, check_ledger_path, stage_run
from stillhouse.train.card import save_model
from stillhouse.train.checkpoints import CHECKPOINTS, list_checkpoints, resume, save_checkpoint
from stillhouse.train.config import TrainConfig, TrainResult
from stillhouse.train.data import Collator, Example, build_examples, epoch_batches, mixed
from stillhouse.train.losses import batch_loss, honours_packing
from stillhouse.train.student import student_model, student_tokenizer


def _fingerprint(config: TrainConfig, dataset_hash: str) -> str:
    shaping = config.model_dump(mode="json", exclude={"save_every"})
    return hashlib.sha256(canonical_json([shaping, dataset_hash]).encode()).hexdigest()


def default_ledger(data: ChatDataset, output_dir: Path) -> Path:
    """The ledger the dataset was made in (its card's anchor names it), so one file holds the lineage."""
    anchored = (data.card.get("ledger_anchor") or {}).get("ledger")
    candidates = [anchored and Path(str(anchored)), data.path / LEDGER_FILE, data.path.parent / LEDGER_FILE]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), output_dir / LEDGER_FILE)


def check_output_dir(output_dir: Path) -> None:
    """A new or empty directory, or one this command was writing (checkpoints to resume): never the user's files."""
    if output_dir.exists() and not output_dir.is_dir():
        raise StillhouseError(f"-o {output_dir} is a file; pass a directory for the model")
    if not output_dir.exists() or list_checkpoints(output_dir / CHECKPOINTS):
        check_writable(output_dir)
        return
    if (output_dir / "config.json").exists():
        raise StillhouseError(f"{output_dir} already holds a trained model; choose another -o")
    if any(p.name != CHECKPOINTS for p in output_dir.iterdir()):
        raise StillhouseError(f"-o {output_dir} is not empty and holds no model; choose a new or empty directory")


def uses_bf16(precision: str) -> bool:
    """Whether a run at `precision` (auto, fp32, bf16) computes in bf16. `auto` picks it on a GPU that supports it,
    not on a CPU, even one with AVX512-BF16: on a 2-core EPYC, bf16 autocast trained Pebble at 1.09x the tokens/s
    of fp32 and 1.6x the peak RSS (bench/train.py's tiny preset: 1.11x, 2.3x)."""
    if precision != "auto":
        return precision == "bf16"
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass (the weights and optimizer stay fp32), or nothing.

    Ours rather than Accelerator(mixed_precision=...), whose process-wide state refuses a second setting, so
    one Python session could not train at fp32 and then at bf16."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: TrainConfig,
    *,
    ledger: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a student on a curated dataset and save it as a standard model directory with a card.

    Checkpoints go to OUTPUT_DIR/checkpoints every `config.save_every` steps; re-running the same call
    after a kill resumes from the last one. They are removed once the model is saved.
    """
    output_dir = Path(output_dir)
    ckpt_root = output_dir / CHECKPOINTS
    check_output_dir(output_dir)
    data = load_dataset(dataset_dir)
    led_path = check_ledger_path(Path(ledger) if ledger else default_ledger(data, output_dir))
    if config.kd and not data.has_logprobs:
        raise StillhouseError(
            f"{data.path} has no teacher logprobs (no 'logprobs' column, or it is empty); collect with logprobs "
            "for --kd topk, or train without --kd"
        )

    rows = mixed(data.train, config.mix_weights, config.seed)  # a --mix naming no row fails here, before the model
    acc = Accelerator()
    set_seed(config.seed)
    tok, tok_source = student_tokenizer(config)
    examples, skipped = build_examples(rows, tok, config.max_length, kd=bool(config.kd))
    if config.kd and not any(e.kd for e in examples):
        raise StillhouseError(
            f"no row of {data.path} has teacher logprobs that line up with its assistant tokens "
            "(re-tokenising the answers does not give the teacher's tokens); was it made with another tokenizer?"
        )
    model, student_source = student_model(config, tok, max((len(e.ids) for e in examples), default=0))
    context = config.max_length or getattr(model.config, "max_position_embeddings", None) or 0
    if context and any(len(e.ids) > context for e in examples):
        skipped["too_long"] = skipped.get("too_long", 0) + sum(len(e.ids) > context for e in examples)
        examples = [e for e in examples if len(e.ids) <= context]
    if not examples:
        raise StillhouseError(f"nothing to train on in {data.path} (skipped: {skipped})")
    val_examples, _ = build_examples(data.validation, tok, context or None, kd=False)

    if config.grad_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` alias; the warning is theirs, not ours
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            model = get_peft_model(model, lora)
        if config.grad_checkpointing:
            model.enable_input_require_grads()

    lengths = [len(e.ids) for e in examples]
    steps_per_epoch = len(epoch_batches(lengths, config.batch_size, config.seed, 0, config.bucket)) // acc.num_processes
    if steps_per_epoch == 0:
        raise StillhouseError(f"{len(examples)} examples make no step for {acc.num_processes} processes")
    total = config.max_steps or steps_per_epoch * config.epochs
    base = model.get_base_model() if config.lora else model
    collate = Collator(
        tok.pad_token_id,
        acc.device,
        pack=config.pack and honours_packing(base),
        select_logits="logits_to_keep" in inspect.signature(base.forward).parameters,
    )
    optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters, ~6x faster than the loop on a CPU
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=acc.device.type in ("cpu", "cuda"),
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup * total), total)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # not prepared: we step it once per step, whatever the world size

    fingerprint = _fingerprint(config, data.hash)
    state: dict[str, Any] = {"step": 0, "losses": [], "tokens": 0, "run_id": new_run_id("train")}
    resumed_from = None
    hint = "re-run with those, or choose another -o (or delete the checkpoints) to start afresh"
    if (saved := resume(acc, ckpt_root, fingerprint, hint)) is not None:
        state, resumed_from = saved, saved["step"]

    provenance = data.provenance()
    inputs = {"dataset": {"path": str(data.path), "hash": data.hash, "rows": len(data.train)}}
    if config.mix:
        inputs["dataset"]["rows_mixed"] = len(rows)
    start = {"config": config.model_dump(mode="json"), "inputs": inputs, "student": student_source}
    start |= {"tokenizer": tok_source, "devices": f"{acc.num_processes} x {acc.device.type}"}
    start["precision"] = "bf16 autocast" if uses_bf16(config.precision) else "fp32"
    start |= provenance | {"resumed_from_step": resumed_from}

    def save(st: dict[str, Any]) -> None:
        save_checkpoint(acc, ckpt_root, st["step"], st | {"fingerprint": fingerprint})

    with contextlib.ExitStack() as stack:
        record = None
        if acc.is_main_process:  # one process writes the ledger
            led = stack.enter_context(Ledger(led_path))
            record = stack.enter_context(stage_run(led, "train", start, state["run_id"]))
            anchor = led.head()
        tps = _loop(acc, model, optimizer, scheduler, examples, collate, config, state, total, save, progress)
        val_loss = _val_loss(acc.unwrap_model(model), val_examples, collate, config.batch_size)
        card = {
            "model_dir": str(output_dir),
            "dataset": str(data.path.resolve()),
            "dataset_hash": data.hash,
            "dataset_provenance": provenance,
            "dataset_anchor": provenance.get("ledger_anchor"),
            "student": student_source,
            "config": config.model_dump(mode="json"),
            "steps": state["step"],
            "final_loss": _tail_mean(state["losses"]),
            "val_loss": val_loss,
            "run_id": state["run_id"],
            "ledger": str(led_path.resolve()),
        }
        model_hash = ""
        if record is not None:
            card["ledger_anchor"] = anchor.to_json()
            model_hash = save_model(acc.unwrap_model(model), tok, output_dir, card)
            shutil.rmtree(ckpt_root, ignore_errors=True)
            end = {"steps": state["step"], "final_loss": card["final_loss"], "val_loss": val_loss}
            end |= {"tokens": state["tokens"], "tokens_per_s": round(tps, 1), "skipped": skipped, "inputs": inputs}
            record.end.update(end | {"outputs": {"model": {"path": str(output_dir), "hash": model_hash}}})
        acc.wait_for_everyone()
    return TrainResult(
        model_dir=output_dir,
        run_id=state["run_id"],
        steps=state["step"],
        losses=state["losses"],
        tokens=state["tokens"],
        tokens_per_s=tps,
        val_loss=val_loss,
        dataset_hash=data.hash,
        model_hash=model_hash,
        resumed_from=resumed_from,
        skipped=skipped,
    )


def _loop(
    acc: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    examples: list[Example],
    collate: Collator,
    config: TrainConfig,
    state: dict[str, Any],
    total: int,
    save: Callable[[dict[str, Any]], Any],
    show: bool,
) -> float:
    """The training loop proper: one optimizer step per batch; returns tokens/s of this session."""
    world, rank = acc.num_processes, acc.process_index
    bf16 = uses_bf16(config.precision)
    lengths = [len(e.ids) for e in examples]
    steps_per_epoch = len(epoch_batches(lengths, config.batch_size, config.seed, 0, config.bucket)) // world
    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (show and acc.is_main_process),
    )
    epoch, batches = -1, []
    tokens, started = 0, time.perf_counter()
    model.train()
    with bar:
        task = bar.add_task("train", total=total, completed=state["step"], loss=float("nan"), tps=0.0)
        while state["step"] < total:
            e, k = divmod(state["step"], steps_per_epoch)
            if e != epoch:
                epoch, batches = e, epoch_batches(lengths, config.batch_size, config.seed, e, config.bucket)
            batch = collate([examples[i] for i in batches[k * world + rank]])
            with autocast(bf16, acc.device):
                loss = batch_loss(model, batch, config.kd_mix)
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_tokens = batch["tokens"] * world
            tokens += n_tokens
            state["step"] += 1
            state["tokens"] += n_tokens
            state["losses"].append(acc.reduce(loss.detach(), "mean").item())
            tps = tokens / (time.perf_counter() - started)
            bar.update(task, completed=state["step"], loss=_tail_mean(state["losses"]), tps=tps)
            if state["step"] % config.save_every == 0 and state["step"] < total:
                save(state)
    return tokens / max(time.perf_counter() - started, 1e-9)


def _tail_mean(losses: list[float], n: int = 20) -> float:
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


@torch.no_grad()
def _val_loss(model: torch.nn.Module, examples: list[Example], collate: Collator, batch_size: int) -> float | None:
    """Token-mean SFT loss on the validation split, if the dataset has one."""
    if not examples:
        return None
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    for i in range(0, len(order), batch_size):
        batch = collate([examples[j] for j in order[i : i + batch_size]])
        n = int(batch["keep"].sum())
        total += float(batch_loss(model, batch, 0.0)) * n
        count += n
    model.train()
    return total / max(count, 1)
