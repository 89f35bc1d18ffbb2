"""Radioactivity on the embedded default: is a student distilled on partly watermarked data caught, and when?

The teacher (default: Ember) answers N training prompts twice through the real server: once watermarked with a
fresh key, once not (temperature 1). For each dose (share of the training chats taken from the watermarked
run) the base student (default: Pebble) is fine-tuned on the mix with `stillhouse.train` after
`stillhouse.curate`, then tested: open mode on our watermarked chats, closed mode on fresh prompts served by the
student. Each row prints the p-value with the real key, and the null (the same test under random keys): its
KS-uniform p and its FPR at alpha 1 %. Open mode prints two p-values: against gamma (the binomial, biased
toward 'clean' when the student shares the teacher's base) and against the control (the teacher's answers
under --control-keys fresh keys, built once; our key tested as one more draw from their spread), which is the
verdict. The served row is the paper's supervised setting: the provider knows which chats it served the suspect
(its account's logs), here the mix's watermarked ones (at dose 0 the 5 % share, which the clean student was
trained on unwatermarked: the row's calibration), at most --served-max of them, and every one of --served-keys
fresh keys answers all of them (a full control). The defaults are the quickstart's student (4,000 prompts, 450
steps of batch 32, lr 2e-3): about 30 min on 2 quiet cores, keep --threads 2 and run it alone. At dose 0 the
null is run over --fpr-keys keys so the FPR is measured, not guessed. Targets (issue 16): open p < 1e-5 at 5 %,
closed p < 1e-5 at 100 %, at 0 % KS p > 0.05 and FPR at 1 % within [0.5 %, 2 %].

The real-text track (--real DIR, set up by bench/real_text.py): SmolLM2-135M-Instruct is the teacher and, as a
copy LoRA-fine-tuned on the mix, the student, on varied open-ended prompts at the default delta 2.

    python bench/radioactivity.py --threads 2 --out DIR    # Ember / Pebble, delta 8 (the micro-world needs it)
    python bench/radioactivity.py --prompts 800 --probe 300 --steps 150 --batch 16 --lr 1e-3   # 5 min
    python bench/radioactivity.py --delta 2 --doses 0,1 --prompts 400 --steps 100
    python bench/radioactivity.py --teacher DIR --student DIR
    python bench/radioactivity.py --real ~/.cache/stillhouse/smollm2-135m-instruct --doses 0,0.05,1 \
        --prompts 400 --probe 100 --steps 60 --batch 8
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from stillhouse.collect import collect
from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import student_path, teacher_path, world
from stillhouse.forensics.chats import Chat, load_chats
from stillhouse.forensics.detect import detect_texts
from stillhouse.forensics.key import WatermarkKey, keygen
from stillhouse.forensics.radioactivity import control_chats, radioactivity
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from real_text import real_prompts, smollm2_dir


def write_prompts(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"id": r["id"], "messages": r["messages"]}) + "\n" for r in records))
    return path


def answers(teacher: Path, key: WatermarkKey | None, prompts: Path, out: Path, max_tokens: int) -> list[Chat]:
    with serve_in_background(teacher, watermark=key) as s:
        collect(
            prompts,
            base_url=s.base_url,
            model=s.model,
            out=out,
            purpose="distillation",
            terms="own",
            api_key_env=None,
            temperature=1.0,
            max_tokens=max_tokens,
            seed=0,
            concurrency=64,
        )
    return load_chats(out)[0]


def served(n: int, dose: float, seed: int) -> list[int]:
    """Which of n training prompts the watermarked server answered at this dose: the first of one shuffle, so
    that a higher dose serves a superset."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: round(dose * n)])


def mix(marked: list[Chat], plain: list[Chat], dose: float, path: Path, seed: int) -> Path:
    """The same prompts, a `dose` share of them answered by the watermarked run."""
    by_prompt = {json.dumps(c.prompt): c for c in plain}
    chosen = set(served(len(marked), dose, seed))
    with path.open("w") as f:
        for i, c in enumerate(marked):
            answer = c.answer if i in chosen else by_prompt[json.dumps(c.prompt)].answer
            f.write(json.dumps({"messages": [*c.prompt, {"role": "assistant", "content": answer}]}) + "\n")
    return path


def row(label: str, v: dict) -> str:
    n, s = v["null"], v["statistic"]
    line = (
        f"{label:<8} p {s['p_value']:>9.2e}  z {s['z']:>6.2f}  scored {s['scored']:>6}  "
        f"null({n['keys']}) KS p {n['ks_uniform_p']:.3f} FPR@1% {n['fpr_at_0.01']:.1%}"
    )
    if "control" in v:
        c = v["control"]
        loo = sorted(c["leave_one_out_p"])
        line += (
            f"\n  {'control':<8} p {c['p_value']:>9.2e}  t {c['t']:>6.2f}  green {c['true_green_rate']:.1%} vs "
            f"{c['green_rate']:.1%} ({c['true_scored']} / {c['scored']} pairs, {c['keys']} keys, key sd "
            f"{statistics.stdev(c['key_rates']):.1%}; leave-one-out p min {loo[0]:.2f} median {loo[len(loo) // 2]:.2f})"
        )
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=None, help="default: Ember")
    ap.add_argument("--student", type=Path, default=None, help="base student (default: Pebble)")
    ap.add_argument("--real", type=Path, default=None, help="SmolLM2 directory: the real-text track")
    ap.add_argument("--prompts", type=int, default=4000, help="training prompts (the quickstart's 4,000)")
    ap.add_argument("--probe", type=int, default=1000, help="fresh prompts for closed mode")
    ap.add_argument("--doses", default="0,0.01,0.05,0.25,1")
    ap.add_argument("--steps", type=int, default=450, help="default: the quickstart's 450 steps of batch 32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--delta", type=float, default=None, help="default: 8 (micro-world), 2 (--real)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default: 160 (micro-world), 96 (--real)")
    ap.add_argument("--lora", action="store_true", help="LoRA (r 16) instead of full fine-tuning (--real: on)")
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--null-keys", type=int, default=100)
    ap.add_argument("--control-keys", type=int, default=10, help="fresh keys for open mode's control")
    ap.add_argument("--served-keys", type=int, default=20, help="fresh keys for the served row's full control")
    ap.add_argument("--served-max", type=int, default=320, help="at most this many served chats (a random subset)")
    ap.add_argument("--fpr-keys", type=int, default=1000, help="null keys at dose 0, to measure the FPR")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs, students and key (key.json) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    if args.real is not None:
        teacher = student = smollm2_dir(args.real)
        records = real_prompts(args.prompts + args.probe, seed=21)
        train_records, probe_records = records[: args.prompts], records[args.prompts :]
    else:
        teacher, student = args.teacher or teacher_path(), args.student or student_path()
        train_records = world.make_prompts(args.prompts, seed=21, phrasings=world.BASIC)
        probe_records = world.make_prompts(args.probe, split="heldout", seed=22, phrasings=world.BASIC)
    real = args.real is not None
    delta = args.delta if args.delta is not None else (2.0 if real else 8.0)
    max_tokens = args.max_tokens or (96 if real else 160)
    lora = args.lora or real
    tok = AutoTokenizer.from_pretrained(teacher)
    doses = [float(d) for d in args.doses.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="bench-radio-")
    root = args.out or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    key = keygen(root / "key.json", gamma=args.gamma, delta=delta, context=args.context)  # kept: re-test with the CLI

    t0 = time.perf_counter()
    train_prompts = write_prompts(root / "prompts.jsonl", train_records)
    probe = [Chat(r["messages"], None) for r in probe_records]
    marked = answers(teacher, key, train_prompts, root / "run-marked", max_tokens)
    plain = answers(teacher, None, train_prompts, root / "run-plain", max_tokens)
    control = control_chats(teacher, marked, key, keys=args.control_keys)
    data = detect_texts(key, [c.answer for c in marked], tok)
    params = f"gamma {args.gamma} delta {delta} context {args.context}"
    print(f"teacher {teacher.name}, student {student.name}; key {params}")
    print(f"{len(marked)} watermarked answers: {data.green}/{data.scored} distinct pairs green, z {data.z:.1f}")
    how = "LoRA r 16" if lora else "full fine-tuning"
    took = time.perf_counter() - t0
    print(f"collected (and the control under {args.control_keys} keys) in {took:.0f} s; ", end="")
    print(f"{args.steps} steps x batch {args.batch} ({how}) per dose\n")

    for dose in doses:
        t1 = time.perf_counter()
        tag = f"{dose:g}"
        mixed = mix(marked, plain, dose, root / f"mix-{tag}.jsonl", seed=0)
        curate([mixed], root / f"data-{tag}", config=CurateConfig(near_dedup=False), overwrite=True)
        config = TrainConfig(
            student=str(student), max_steps=args.steps, batch_size=args.batch, lr=args.lr, lora=lora, lora_r=16,
            lora_alpha=32,
        )  # fmt: skip
        train(root / f"data-{tag}", root / f"student-{tag}", config)
        null = args.fpr_keys if dose == 0 else args.null_keys
        s = str(root / f"student-{tag}")
        opened = radioactivity(s, key, marked, tok, mode="open", null_keys=null, control=control)
        closed = radioactivity(s, key, probe, tok, mode="closed", null_keys=null, max_tokens=max_tokens)
        logs = served(len(marked), dose or 0.05, seed=0)
        if len(logs) > args.served_max:
            logs = sorted(random.Random(1).sample(logs, args.served_max))
        given = [marked[i] for i in logs]
        full = control_chats(teacher, given, key, keys=args.served_keys, full=True)
        logged = radioactivity(s, key, given, tok, mode="open", null_keys=args.null_keys, control=full)
        print(f"dose {dose:>6.0%}  ({time.perf_counter() - t1:.0f} s)")
        print("  " + row("open", opened))
        print("  " + row("closed", closed))
        print("  " + row(f"served {len(given)}", logged))
    tmp.cleanup()


if __name__ == "__main__":
    main()
