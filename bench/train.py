"""Training speed and memory: `stillhouse train` against TRL's SFTTrainer, same model, data, batch and steps.

Both train the same freshly initialised `tiny` preset on the same chats for one epoch, with the
settings that suit a CPU (fp32 unless `--precision bf16`, no gradient checkpointing, loss on assistant tokens
only, the same cosine schedule, warm-up and clipping). TRL runs twice, without packing (its padding-free packing is
pathological on a CPU, see ../shared/README.md): with its default random sampler and with its
length-grouped sampler. Ours runs as it ships (random batches, each batch's chats packed into rows)
and with length buckets (`bucket=64`), so each is compared with the TRL run that batches the same
way: the same chats meet in a step, only the layout differs. Each run is its own subprocess so peak
RSS is clean. Tokens/s counts the chats' real (unpadded) tokens
over the training loop; every result is scored on the same held-out chats.

    python bench/train.py                     # 2,000 chats, batch 16, one epoch
    python bench/train.py --n 4000 --threads 2
    python bench/train.py --precision bf16 --runners stillhouse   # both sides under bf16 autocast
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNERS = ("stillhouse", "trl", "stillhouse-grouped", "trl-grouped")
PEERS = {"stillhouse": "trl", "stillhouse-grouped": "trl-grouped"}  # like for like: the same kind of batches
HELDOUT = 256  # chats every runner's result is scored on, so "equal loss" compares like with like
WORDS = [
    "amber",
    "basalt",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "iris",
    "juniper",
    "kestrel",
    "lantern",
    "meadow",
    "nectar",
]


def chats(n: int, seed: int = 0) -> list[dict]:
    """Chats of mixed lengths (a few to ~150 tokens), like a curated distillation set."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            q, r = f"What is {a} plus {b}?", f"{a} + {b} = {a + b}"
        elif kind == 1:
            w = rng.choice(WORDS)
            q, r = f"Reverse the word '{w}'.", f"The word '{w}' reversed is '{w[::-1]}'."
        elif kind == 2:
            xs = [rng.randint(0, 99) for _ in range(rng.randint(3, 12))]
            q, r = f"Sort these numbers: {', '.join(map(str, xs))}.", ", ".join(map(str, sorted(xs)))
        else:
            ws = rng.choices(WORDS, k=rng.randint(8, 40))
            q = f"Summarise this list of words by counting them: {' '.join(ws)}"
            r = " ".join(f"{w}: {ws.count(w)}." for w in sorted(set(ws)))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]})
    return rows


def prepare(work: Path, n: int) -> None:
    """The dataset and one saved fresh model, so every runner starts from identical weights."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer

    from stillhouse import embedded
    from stillhouse.core.errors import StillhouseError
    from stillhouse.embedded.tokenizer import train_tokenizer
    from stillhouse.train.presets import fresh_model

    rows = chats(n)
    (work / "data" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), work / "data" / "data" / "train-00000.parquet")
    pq.write_table(pa.Table.from_pylist(chats(HELDOUT, seed=1)), work / "heldout.parquet")
    try:
        tok = AutoTokenizer.from_pretrained(embedded.teacher_path())
    except StillhouseError:  # Ember not built in this checkout: a tokenizer fitted on the chats
        tok = train_tokenizer((m["content"] for r in rows for m in r["messages"]), vocab_size=2048)
    torch.manual_seed(0)
    model = fresh_model("tiny", tok, max_positions=512)
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")


def heldout_loss(model, tok, work: Path) -> float:
    """Token-mean loss on the assistant tokens of the held-out chats, the same code for every runner."""
    import pyarrow.parquet as pq
    import torch

    from stillhouse.train.data import Collator, build_examples
    from stillhouse.train.losses import batch_loss

    examples, _ = build_examples(pq.read_table(work / "heldout.parquet").to_pylist(), tok, None, kd=False)
    collate, total, count = Collator(tok.pad_token_id, torch.device("cpu")), 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), 32):
            batch = collate(examples[i : i + 32])
            n = int(batch["keep"].sum())
            total, count = total + float(batch_loss(model, batch, 0.0)) * n, count + n
    return total / count


def run_stillhouse(work: Path, args: argparse.Namespace) -> dict:
    from stillhouse.train import TrainConfig, train

    config = TrainConfig(
        student=str(work / "base"),
        max_steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        bucket=64 if args.worker == "stillhouse-grouped" else 1,
        save_every=args.steps + 1,
        precision=args.precision,
    )
    r = train(work / "data", work / f"out-{args.worker}", config, progress=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(r.model_dir), AutoTokenizer.from_pretrained(r.model_dir)
    held = heldout_loss(model, tok, work)
    return {"tokens": r.tokens, "seconds": r.tokens / r.tokens_per_s, "losses": r.losses, "heldout": held}


def run_trl(work: Path, args: argparse.Namespace, sampling: str) -> dict:
    import math

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_parquet(str(work / "data" / "data" / "train-00000.parquet"))
    config = SFTConfig(
        output_dir=str(work / f"out-{sampling}"),
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(args.warmup * args.steps),
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=args.precision == "bf16",
        fp16=False,
        gradient_checkpointing=False,
        packing=False,
        assistant_only_loss=True,
        train_sampling_strategy=sampling,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(work / "base")
    tok = AutoTokenizer.from_pretrained(work / "base")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    held = heldout_loss(trainer.model, tok, work)
    return {"tokens": tokens, "seconds": seconds, "losses": losses, "heldout": held}


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    started = time.perf_counter()
    if args.worker.startswith("stillhouse"):
        res = run_stillhouse(work, args)
    else:
        res = run_trl(work, args, "group_by_length" if args.worker == "trl-grouped" else "random")
    res["wall"] = time.perf_counter() - started
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="chats (one epoch)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="both sides: fp32, or bf16 autocast")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--worker", choices=RUNNERS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    steps = args.n // args.batch
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, steps * args.batch)
        results = {}
        for name in args.runners.split(","):
            cmd = [sys.executable, __file__, "--worker", name, "--work", tmp, "--steps", str(steps)]
            cmd += ["--batch", str(args.batch), "--lr", str(args.lr), "--warmup", str(args.warmup)]
            cmd += ["--threads", str(args.threads), "--precision", args.precision]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(line[7:])
            r = results[name]
            print(f"  {name}: {r['tokens'] / r['seconds']:,.0f} tok/s", file=sys.stderr)

    print(
        f"one epoch of {steps * args.batch} chats, batch {args.batch}, {steps} steps, tiny preset, {args.precision}, "
        f"threads={args.threads or 'default'}"
    )
    print(
        f"{'runner':<13} {'tokens':>8} {'loop s':>7} {'tok/s':>7} {'wall s':>7} {'peak RSS MB':>11} "
        f"{'train loss':>10} {'held-out loss':>13}"
    )
    for name, r in results.items():
        final = sum(r["losses"][-10:]) / len(r["losses"][-10:])  # the last 10 steps: depends on those batches
        print(
            f"{name:<13} {r['tokens']:>8} {r['seconds']:>7.1f} {r['tokens'] / r['seconds']:>7,.0f} {r['wall']:>7.1f} "
            f"{r['peak_rss_mb']:>11,.0f} {final:>10.4f} {r['heldout']:>13.4f}"
        )
    for mine, peer in PEERS.items():
        if mine in results and peer in results:
            a, b = results[mine], results[peer]
            speed = (a["tokens"] / a["seconds"]) / (b["tokens"] / b["seconds"])
            print(
                f"{mine} vs {peer}: {speed:.2f}x tokens/s, {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x peak RSS, "
                f"held-out loss {a['heldout']:.4f} vs {b['heldout']:.4f}"
            )


if __name__ == "__main__":
    main()
