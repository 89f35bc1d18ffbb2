"""Rebuild the shipped models from scratch: Ember (the embedded teacher), Pebble (the base student) and the
reference models Flint and Slate (lineage's null).

    python scripts/train_embedded.py --which both            # the full recipe: 15k steps of batch 64 each
    python scripts/train_embedded.py --which references      # Flint and Slate, lineage's reference models

Both share one tokenizer, fitted on the micro-world's text (Ember's and Pebble's), and each starts from
its own seeded initialisation (Pebble is never a descendant of Ember). Each trains on an endless stream
of fresh chats from the training phrasings, then is scored on held-out prompts of those phrasings and on
held-out phrasings. Every --checkpoint-minutes a checkpoint with optimizer state goes to
WORK/<name>/checkpoints (one kept, ~40 MB: commit it to carry a run across sessions); re-running the same
command resumes from it. --stop-after-minutes ends a session cleanly on a checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from stillhouse.embedded import MODELS_DIR
from stillhouse.embedded.pretrain import PretrainConfig, pretrain, save, skill_accuracy
from stillhouse.embedded.tokenizer import train_tokenizer
from stillhouse.embedded.world import EMBER, FLINT, PEBBLE, SKILLS, SLATE, Persona, training_chats
from stillhouse.train.presets import fresh_model

# name -> (persona, seed); Flint and Slate are lineage's reference models (unrelated, same world, own surface)
PERSONAS = {"ember": (EMBER, 1), "pebble": (PEBBLE, 2), "flint": (FLINT, 3), "slate": (SLATE, 4)}
GROUPS = {"both": ["ember", "pebble"], "references": ["flint", "slate"]}
VOCAB_SIZE = 512  # small: operand words split into a few letters each, which reverse and count need


def shared_tokenizer(path: Path):
    """Ember's tokenizer, fitted once on both personas' text; Pebble reuses it."""
    if (path / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(path)
    texts = (m["content"] for persona in (EMBER, PEBBLE) for chat in training_chats(persona, 0, 20000) for m in chat)
    tok = train_tokenizer(texts, vocab_size=VOCAB_SIZE)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def build(persona: Persona, seed: int, tok, args: argparse.Namespace, minutes_left: float | None) -> dict | None:
    """Train (or resume) one model; save it with training.json once it has all its steps."""
    name = persona.name.lower()
    start = args.init_from / name if args.init_from else None
    before = json.loads((start / "training.json").read_text()) if start else None
    init = hashlib.sha256((start / "model.safetensors").read_bytes()).hexdigest() if start else ""
    config = PretrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=seed, init=init
    )
    done = args.out / name / "training.json"
    if done.exists() and json.loads(done.read_text()).get("config") == asdict(config):
        print(f"{name}: already trained with these settings ({done}); skipping")
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    if start is not None:  # its own weights, trained further: a continued Pebble is still no descendant of Ember
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).to(args.device)
    else:
        model = fresh_model(args.preset, tok, max_positions=256).to(args.device)

    def probe(step: int) -> None:
        acc = skill_accuracy(model, tok, persona, per_skill=5, split="train", seed=99)
        print(f"{name} checkpoint {step}: " + " ".join(f"{s} {a:.0%}" for s, a in acc.items()), flush=True)

    state = pretrain(
        model,
        tok,
        persona,
        config,
        args.work / name / "checkpoints",
        checkpoint_minutes=args.checkpoint_minutes,
        stop_after_minutes=minutes_left,
        on_checkpoint=probe,
    )
    if state["step"] < config.steps:
        print(f"{name}: stopped at step {state['step']} of {config.steps}; re-run the same command to resume")
        return None
    n = args.eval_per_skill
    accuracy = {
        "training_phrasings": skill_accuracy(model, tok, persona, per_skill=n, split="train", seed=4321),
        "heldout_phrasings": skill_accuracy(model, tok, persona, per_skill=n, split="heldout", seed=1234),
    }
    record = {
        "persona": persona.name,
        "steps": state["step"],
        "tokens": state["tokens"],
        "examples": state["step"] * config.batch_size,
        "minutes": state["minutes"],
        "device": args.device,
        "threads": args.threads,
        "preset": args.preset,
        "config": asdict(config),
        "final_loss": sum(state["losses"][-100:]) / len(state["losses"][-100:]),
        "accuracy": accuracy,
        "eval": f"greedy, {n} prompts per skill; training_phrasings: fresh prompts of the training phrasings",
    }
    if before is not None:  # the whole history: what the starting weights had been trained on, and for how long
        record["continued_from"] = before
        record["total_steps"] = before.get("total_steps", before["steps"]) + state["step"]
        record["total_minutes"] = round(before.get("total_minutes", before["minutes"]) + state["minutes"], 2)
    save(model, tok, args.out / name, record)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", choices=[*PERSONAS, *GROUPS], default="both")
    ap.add_argument("--steps", type=int, default=PretrainConfig.steps)
    ap.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=PretrainConfig.lr)
    ap.add_argument("--warmup", type=int, default=PretrainConfig.warmup, help="warm-up steps")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    ap.add_argument("--checkpoint-minutes", type=float, default=10.0)
    ap.add_argument("--stop-after-minutes", type=float, default=None, help="end this session on a checkpoint")
    ap.add_argument("--eval-per-skill", type=int, default=50)
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument(
        "--init-from",
        type=Path,
        help="continue from the models in this folder (a copy of the shipped ones) after a recipe change",
    )
    ap.add_argument("--work", type=Path, default=Path("checkpoints/embedded"), help="tokenizer and checkpoints")
    args = ap.parse_args()
    names = GROUPS.get(args.which, [args.which])
    missing = [n for n in names if args.init_from and not (args.init_from / n / "training.json").exists()]
    if missing:
        ap.error(f"--init-from {args.init_from} has no trained {', '.join(missing)} (a folder with training.json)")
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    tok = shared_tokenizer(args.work / "tokenizer")
    results, deadline = {}, time.time() + 60 * (args.stop_after_minutes or 0)
    for name in names:
        persona, seed = PERSONAS[name]
        record = build(persona, seed, tok, args, (deadline - time.time()) / 60 if args.stop_after_minutes else None)
        if record is None:
            return
        results[name] = record
    for split in ("training_phrasings", "heldout_phrasings"):
        print(f"\n{split}, greedy, {args.eval_per_skill} prompts per skill:")
        print("| model | steps | min | " + " | ".join(SKILLS) + " |")
        for name, r in results.items():
            acc = r["accuracy"][split]
            cells = " | ".join(f"{100 * acc[s]:.0f}" if s in acc else "-" for s in SKILLS)
            print(f"| {name} | {r['steps']} | {r['minutes']:.0f} | {cells} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
