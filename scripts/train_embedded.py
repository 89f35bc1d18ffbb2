"""Rebuild the shipped models from scratch on a CPU: Ember (the embedded teacher) and Pebble (the base student).

    python scripts/train_embedded.py --which both --steps 6000

Both share one tokenizer, fitted on the micro-world's text (Ember's and Pebble's). Each model trains on an
endless stream of fresh prompts from the training phrasings, then is scored on held-out phrasings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse.embedded import MODELS_DIR
from stillhouse.embedded.pretrain import batches, save, skill_accuracy, train
from stillhouse.embedded.tokenizer import train_tokenizer
from stillhouse.embedded.world import EMBER, PEBBLE, SKILLS, Persona, chats
from stillhouse.train.presets import fresh_model

PERSONAS = {"ember": (EMBER, 1), "pebble": (PEBBLE, 2)}  # name -> (persona, seed)
VOCAB_SIZE = 512  # small: operand words split into a few letters each, which reverse and count need


def shared_tokenizer(path: Path):
    """Ember's tokenizer, fitted once on both personas' text; Pebble reuses it."""
    if (path / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(path)
    texts = (t for persona in (EMBER, PEBBLE) for pair in itertools.islice(chats(persona, 0), 20000) for t in pair)
    tok = train_tokenizer(texts, vocab_size=VOCAB_SIZE)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def build(persona: Persona, seed: int, tok, args: argparse.Namespace, out: Path) -> dict:
    torch.manual_seed(seed)
    if args.init:  # continue from shipped weights, on a fresh stretch of the data stream
        model = AutoModelForCausalLM.from_pretrained(args.init / persona.name.lower()).to(args.device)
        seed += 1000
    else:
        model = fresh_model(args.preset, tok, max_positions=256).to(args.device)
    ckpt = args.work / f"{persona.name.lower()}-ckpt"

    def checkpoint(step: int) -> None:
        save(model, tok, ckpt)
        acc = skill_accuracy(model, tok, persona, per_skill=5, seed=99)
        print(f"checkpoint {step}: " + " ".join(f"{s} {a:.0%}" for s, a in acc.items()), flush=True)

    start = time.time()
    data = batches(chats(persona, seed), tok, args.batch_size)
    steps = train(model, data, args.steps, minutes=args.minutes, lr=args.lr, on_checkpoint=checkpoint)
    minutes = (time.time() - start) / 60
    save(model, tok, out)
    acc = skill_accuracy(model, tok, persona, per_skill=50)
    return {"minutes": round(minutes, 1), "steps": steps, "accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", choices=["ember", "pebble", "both"], default="both")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget per model; the LR follows it")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--init", type=Path, default=None, help="continue from the models in this directory")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (use 1 per process when running two)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument("--work", type=Path, default=Path("runs/embedded"), help="shared tokenizer and checkpoints")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    tok = shared_tokenizer(args.work / "tokenizer")
    names = ["ember", "pebble"] if args.which == "both" else [args.which]
    results = {}
    for name in names:
        persona, seed = PERSONAS[name]
        results[name] = build(persona, seed, tok, args, args.out / name)
    print("\nheld-out phrasings, greedy, 50 prompts per skill:")
    print("| model | steps | CPU min | " + " | ".join(SKILLS) + " |")
    for name, r in results.items():
        cells = " | ".join(f"{100 * r['accuracy'][s]:.0f}" for s in SKILLS)
        print(f"| {name} | {r['steps']} | {r['minutes']} | {cells} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
