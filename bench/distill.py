"""How much teacher data does distillation need? Agreement with the teacher vs training examples.

The embedded teacher (Ember) answers world's training prompts greedily, reporting its top-k
logprobs per generated token the way an OpenAI-compatible API does. The base student (Pebble) is
then trained on the first 250 / 1,000 / 4,000 of those chats, with SFT and with SFT + top-k KD (and,
with `--methods sft,kd,scratch`, a fresh `tiny` student from scratch for contrast). Every run takes the
same number of optimizer steps, so only the amount of data differs. Each student is scored on world's
held-out phrasings: its agreement with the teacher (same graded answer, Wilson 95 % interval) and its
accuracy. KD against SFT at each size is a paired test on the same prompts (exact McNemar): whether
KD's gain is outside the noise is its p-value, not the gap between two intervals.

    python bench/distill.py                          # Ember and Pebble, the embedded default
    python bench/distill.py --sizes 0,250 --steps 100 --n-eval 20
    python bench/distill.py --teacher DIR --student DIR   # other local models with one tokenizer
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy import stats
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from stillhouse import embedded
from stillhouse.embedded import world
from stillhouse.embedded.suite import micro_suite, world_grader
from stillhouse.evaluate import LocalModel, agrees, score
from stillhouse.train import TrainConfig, train
from stillhouse.train.data import Vocab


@torch.no_grad()
def teacher_chats(model_dir: Path, prompts: list[dict], top_k: int, batch: int, max_new: int) -> list[dict]:
    """Greedy answers with per-token top-k logprobs in OpenAI's `logprobs.content` shape (no stop token)."""
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    vocab = Vocab(tok)

    def entry(tid: int, logprob: float) -> dict:
        return {"token": tok.decode([tid]), "logprob": logprob, "bytes": list(vocab.bytes_of[tid])}

    rows = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        texts = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False) for p in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out.sequences[:, enc["input_ids"].shape[1] :]
        logp = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # [batch, steps, vocab]
        top = logp.topk(top_k, dim=-1)
        for b, p in enumerate(chunk):
            content, ids = [], []
            for t, tid in enumerate(new[b].tolist()):
                if tid in (tok.eos_token_id, tok.pad_token_id):
                    break
                alts = [entry(i, v) for v, i in zip(top.values[b, t].tolist(), top.indices[b, t].tolist(), strict=True)]
                content.append(entry(tid, float(logp[b, t, tid])) | {"top_logprobs": alts})
                ids.append(tid)
            rows.append(
                {
                    "messages": [*p["messages"], {"role": "assistant", "content": tok.decode(ids)}],
                    "skill": p["skill"],
                    "answer": p["answer"],
                    "logprobs": content,
                }
            )
    return rows


def mcnemar(a: list[bool], b: list[bool]) -> tuple[float, int, int]:
    """Exact McNemar test of two paired outcome lists: (two-sided p, a-only wins, b-only wins)."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return float(p), only_a, only_b


def write_dataset(path: Path, rows: list[dict]) -> Path:
    (path / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "data" / "train-00000.parquet")
    card = {"teacher": {"model": "ember", "host": "local"}, "terms": "own", "purpose": "distillation"}
    (path / "stillhouse.json").write_text(json.dumps(card))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,250,1000,4000")
    ap.add_argument("--methods", default="sft,kd")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per run, whatever the data size")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--top-k", type=int, default=20, help="logprobs per token, as an API reports (max 20)")
    ap.add_argument("--n-eval", type=int, default=50, help="held-out prompts per skill")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--teacher", type=Path, help="default: the embedded teacher, Ember")
    ap.add_argument("--student", type=Path, help="default: the shipped base student, Pebble")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = args.teacher or embedded.teacher_path()
    student = args.student or embedded.student_path()
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    grader = world_grader()

    t0 = time.perf_counter()
    pool = teacher_chats(
        teacher, world.make_prompts(max(sizes), split="train", seed=1), args.top_k, 64, args.max_new_tokens
    )
    eval_records = micro_suite(args.n_eval, seed=2)
    chats = [r["messages"] for r in eval_records]
    teacher_replies = LocalModel(teacher, max_new_tokens=args.max_new_tokens).respond(chats)
    print(f"teacher: {len(pool)} training chats, {len(chats)} held-out prompts ({time.perf_counter() - t0:.0f} s)")

    def measure(model_dir: Path) -> dict:
        replies = LocalModel(model_dir, max_new_tokens=args.max_new_tokens).respond(chats)
        same = [agrees(r, t, s, grader) for r, t, s in zip(eval_records, teacher_replies, replies, strict=True)]
        return score(eval_records, teacher_replies, replies, grader)["all"] | {"same": same}

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = measure(student)
        results["teacher"] = {"accuracy": base["a_accuracy"]}
        for size in sizes:
            if size == 0:
                results["0/base"] = base
                continue
            data = write_dataset(work / f"data-{size}", pool[:size])
            for method in methods:
                config = TrainConfig(
                    student="tiny" if method == "scratch" else str(student),
                    tokenizer=str(teacher) if method == "scratch" else None,
                    kd="topk" if method == "kd" else None,
                    max_steps=args.steps,
                    batch_size=args.batch,
                    lr=args.lr,
                    save_every=args.steps + 1,
                )
                started = time.perf_counter()
                r = train(data, work / f"{method}-{size}", config, progress=False)
                s = measure(r.model_dir)
                results[f"{size}/{method}"] = s | {"train_s": time.perf_counter() - started}
                print(
                    f"{size:>6} {method:<8} agreement {100 * s['agreement']:5.1f} % "
                    f"[{100 * s['agreement_ci95'][0]:.1f}, {100 * s['agreement_ci95'][1]:.1f}]  "
                    f"accuracy {100 * s['b_accuracy']:5.1f} %  ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )

    print(f"\nteacher accuracy on held-out phrasings: {100 * results['teacher']['accuracy']:.1f} %")
    print(f"{'examples':>8} {'method':<8} {'agreement %':>11} {'95 % CI':>13} {'accuracy %':>10}")
    for key, s in results.items():
        if key == "teacher":
            continue
        size, method = key.split("/")
        lo, hi = s["agreement_ci95"]
        print(
            f"{size:>8} {method:<8} {100 * s['agreement']:>11.1f} {100 * lo:>6.1f}-{100 * hi:<5.1f} "
            f"{100 * s['b_accuracy']:>10.1f}"
        )
    if "sft" in methods and "kd" in methods:
        print("\nKD against SFT, paired on the same prompts (exact McNemar, two-sided):")
        for size in (s for s in sizes if s):
            sft, kd = results[f"{size}/sft"], results[f"{size}/kd"]
            p, only_kd, only_sft = mcnemar(kd["same"], sft["same"])
            gain = 100 * (kd["agreement"] - sft["agreement"])
            verdict = "outside the noise" if p < 0.05 else "within the noise"
            print(
                f"{size:>8} examples: KD {gain:+.1f} points (agrees where SFT does not on {only_kd} prompts, "
                f"the reverse on {only_sft}), p = {p:.3g}: {verdict}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
