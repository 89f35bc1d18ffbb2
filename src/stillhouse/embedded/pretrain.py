"""Train a small chat model from scratch on an endless stream of (prompt, answer) pairs, nanoGPT-plain.

Used to build the shipped models (scripts/train_embedded.py); the loss covers the assistant's tokens only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from stillhouse.embedded.world import SKILLS, Persona, grade, make_prompts

IGNORE = -100


def encode_chat(tok: PreTrainedTokenizerBase, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of a one-turn chat as the chat template renders it, and labels masking all but the answer."""
    head = tok.encode(prompt, add_special_tokens=False)
    tail = tok.encode(answer, add_special_tokens=False)
    special = tok.convert_tokens_to_ids
    ids_head = [tok.bos_token_id, special("<|user|>"), *head, tok.eos_token_id, special("<|assistant|>")]
    ids_tail = [*tail, tok.eos_token_id]
    return ids_head + ids_tail, [IGNORE] * len(ids_head) + ids_tail


def batches(
    pairs: Iterator[tuple[str, str]], tok: PreTrainedTokenizerBase, batch_size: int, bucket: int = 16
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, labels, attention_mask) batches of similar lengths, so little is padding.

    `bucket` batches' worth of chats are sorted by length, cut into batches and served in random order.
    """
    gen = torch.Generator().manual_seed(0)
    while True:
        rows = sorted((encode_chat(tok, *next(pairs)) for _ in range(batch_size * bucket)), key=lambda r: len(r[0]))
        for b in torch.randperm(bucket, generator=gen).tolist():
            chunk = rows[b * batch_size : (b + 1) * batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((batch_size, width), tok.pad_token_id)
            labels = torch.full((batch_size, width), IGNORE)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for i, (x, y) in enumerate(chunk):
                ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            yield ids, labels, mask


def train(
    model: PreTrainedModel,
    data: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
    *,
    minutes: float | None = None,
    lr: float = 2e-3,
    warmup: int = 200,
    weight_decay: float = 0.1,
    log_every: int = 50,
    on_checkpoint: Callable[[int], None] | None = None,
    checkpoint_minutes: float = 10.0,
) -> int:
    """AdamW, linear warm-up, cosine decay to a tenth of `lr`, gradients clipped at 1; returns the steps run.

    With `minutes`, the schedule follows the wall clock and training stops when the time is up (or at
    `steps`), so a run on a busy shared CPU still finishes its decay instead of being cut mid-schedule.
    """
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    model.train()
    start = last_ckpt = time.time()
    seen, step = 0, 0
    while step < steps:
        step += 1
        elapsed = time.time() - start
        progress = step / steps if minutes is None else max(step / steps, elapsed / (60 * minutes))
        if progress >= 1:
            return step - 1
        scale = min(1.0, step / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        ids, labels, mask = (t.to(model.device) for t in next(data))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += int(mask.sum())
        if step % log_every == 0:
            print(
                f"step {step} loss {loss.item():.4f} lr {lr * scale:.2e} {step / elapsed:.2f} steps/s "
                f"{seen / elapsed:.0f} tok/s {elapsed / 60:.1f} min",
                flush=True,
            )
        if on_checkpoint is not None and time.time() - last_ckpt > 60 * checkpoint_minutes:
            on_checkpoint(step)
            model.train()
            last_ckpt = time.time()
    return step


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 100,
    batch_size: int = 64,
) -> list[str]:
    """Greedy replies to single-turn prompts, rendered with the tokenizer's chat template."""
    model.eval()
    tok.padding_side = "left"
    replies = []
    for i in range(0, len(prompts), batch_size):
        texts = [
            tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts[i : i + batch_size]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        replies += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return replies


def skill_accuracy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    persona: Persona,
    per_skill: int = 50,
    split: str = "heldout",
    seed: int = 1234,
    skills: tuple[str, ...] = SKILLS,
) -> dict[str, float]:
    """Fraction of greedy replies graded correct, per skill, on `per_skill` prompts each."""
    records = make_prompts(per_skill * len(skills), skills=skills, split=split, seed=seed, persona=persona)
    replies = generate(model, tok, [r["messages"][0]["content"] for r in records])
    hits: dict[str, list[bool]] = {s: [] for s in skills}
    for r, text in zip(records, replies, strict=True):
        hits[r["skill"]].append(grade(r["skill"], r["answer"], text))
    return {s: sum(h) / len(h) for s, h in hits.items()}


def save(model: PreTrainedModel, tok: PreTrainedTokenizerBase, out: Path) -> None:
    """A standard HF directory: safetensors weights, tokenizer with chat template, eos = <|end|>."""
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
