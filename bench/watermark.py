"""The defender's trade-off: task accuracy and watermark detectability of a served model, per delta.

For each delta the teacher (default: Ember) is served with a KGW watermark (gamma 0.25, context 1 unless told)
and answers held-out prompts of the micro-world through the real server, greedily (the watermark moves greedy
choices too). Per delta it prints accuracy, the share of ~200-token texts (consecutive answers joined until
200 tokens) detected at p < 1e-4, and the median z. The false-positive rate is measured on unwatermarked
text with the same key and the same test (exact one-sided binomial over distinct (context, token) pairs):
the teacher's own answers at delta 0, and 1,000 scripted answers of the micro-world's persona joined the same
way; FPR at alpha 1 % and a KS test of randomised p-values against uniform, with one random key per text
(the guarantee) and with one fixed key for all (common pairs share their colour). A high-entropy model (a
randomly initialised tiny student, 200 sampled tokens per answer) runs beside it for contrast: the
micro-world's answers have almost no entropy for the watermark to use.

    python bench/watermark.py                               # Ember; writes bench/watermark.png
    python bench/watermark.py --teacher DIR --prompts 120 --deltas 0,2,4
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import torch
from scipy import stats
from transformers import AutoTokenizer

from stillhouse.embedded import teacher_path, world
from stillhouse.forensics.detect import detect_ids, null_keys, randomized_p
from stillhouse.forensics.key import WatermarkKey
from stillhouse.serve import serve_in_background
from stillhouse.train.presets import fresh_model


def texts_of(answers: list[list[int]], length: int) -> list[list[int]]:
    """Consecutive answers joined until each text has at least `length` tokens."""
    out, cur = [], []
    for ids in answers:
        cur += ids
        if len(cur) >= length:
            out.append(cur)
            cur = []
    return out


def detectability(key: WatermarkKey, texts: list[list[int]]) -> tuple[float, float, list[float]]:
    scores = [detect_ids(key, [t]) for t in texts]
    p = [s.p_value for s in scores]
    return float(np.mean([x < 1e-4 for x in p])), statistics.median(s.z for s in scores), p


def false_positives(texts: list[list[int]], key: WatermarkKey | None, seed: int = 0) -> str:
    """FPR at 1 % and a KS test of randomised p-values (exactly uniform under H0, unlike the discrete exact p).

    key None: a fresh random key per text, the setting the test's guarantee is about; a fixed key shares its
    draw of the common pairs' colours among all texts, so its p-values over texts are not independent.
    """
    rng = np.random.default_rng(seed)
    keys = [key] * len(texts) if key else null_keys(WatermarkKey(b"f" * 32), len(texts), seed=seed)
    scores = [detect_ids(k, [t]) for k, t in zip(keys, texts, strict=True)]
    p = np.array([s.p_value for s in scores])
    rand = [randomized_p(s, rng) for s in scores]
    return f"{len(p):>5} texts: FPR@1% {np.mean(p < 0.01):.2%}, KS-uniform p {stats.kstest(rand, 'uniform').pvalue:.3f}"


def served(
    model_dir: Path, key: WatermarkKey | None, chats: list[list[dict]], max_tokens: int, temperature: float = 0.0
) -> list[str]:
    """Answers of the real server, through the openai client, 32 at a time (so the engine batches them)."""
    with serve_in_background(model_dir, watermark=key) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="unused")

        def one(i: int) -> str:
            reply = client.chat.completions.create(
                model=s.model, messages=chats[i], temperature=temperature, max_tokens=max_tokens, seed=i
            )
            return reply.choices[0].message.content or ""

        with ThreadPoolExecutor(32) as pool:
            return list(pool.map(one, range(len(chats))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=None, help="served model (default: Ember)")
    ap.add_argument("--prompts", type=int, default=240, help="held-out prompts per delta")
    ap.add_argument("--deltas", default="0,0.5,1,2,4,8")
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--length", type=int, default=200, help="tokens per detection text")
    ap.add_argument("--fpr-texts", type=int, default=1000)
    ap.add_argument("--plot", type=Path, default=Path(__file__).with_suffix(".png"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = args.teacher or teacher_path()
    tok = AutoTokenizer.from_pretrained(teacher)
    deltas = [float(d) for d in args.deltas.split(",")]
    key = WatermarkKey.random(args.gamma, 0.0, args.context)
    records = world.make_prompts(args.prompts, split="heldout", seed=7, phrasings=world.BASIC)
    chats = [r["messages"] for r in records]

    def ids(texts: list[str]) -> list[list[int]]:
        return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    print(f"teacher {teacher}, {len(records)} held-out prompts, gamma {args.gamma}, context {args.context}")
    print(f"{'delta':>6} {'accuracy':>9} {'texts':>6} {'detected@1e-4':>14} {'median z':>9} {'s':>6}")
    rows, plain_answers = [], []
    for delta in deltas:
        t0 = time.perf_counter()
        k = WatermarkKey(key.secret, args.gamma, delta, args.context)
        answers = served(teacher, k if delta > 0 else None, chats, 160)
        plain_answers = answers if delta == 0 else plain_answers
        accuracy = np.mean([world.grade(r["skill"], r["answer"], a) for r, a in zip(records, answers, strict=True)])
        rate, z, p = detectability(k, texts_of(ids(answers), args.length))
        rows.append((delta, accuracy, rate, z, p))
        n = len(p)
        print(f"{delta:>6} {accuracy:>9.1%} {n:>6} {rate:>14.1%} {z:>9.2f} {time.perf_counter() - t0:>6.0f}")

    scripted_rng = random.Random(11)
    scripted = [
        world.respond(r, rng=scripted_rng)
        for r in world.make_prompts(6 * args.fpr_texts, seed=11, phrasings=world.BASIC)
    ]
    plain = texts_of(ids(scripted), args.length)[: args.fpr_texts]
    teacher_plain = texts_of(ids(plain_answers), args.length) if plain_answers else []
    print(f"\nfalse positives on unwatermarked text of >= {args.length} tokens (exact one-sided binomial test):")
    for name, texts in (("scripted persona answers", plain), ("teacher's delta-0 answers", teacher_plain)):
        if texts:
            print(f"  {name:<26} one random key per text {false_positives(texts, None)}")
            print(f"  {name:<26} one fixed key, all texts  {false_positives(texts, key)}")

    with tempfile.TemporaryDirectory() as tmp:  # a model whose text has entropy, for contrast
        torch.manual_seed(0)
        fresh_model("tiny", tok, max_positions=512).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        k = WatermarkKey(key.secret, args.gamma, 2.0, args.context)
        noisy = served(Path(tmp), k, chats[:50], args.length, temperature=1.0)
        rate, z, _ = detectability(k, ids(noisy))
        print(f"\nrandom tiny model (high entropy), delta 2, {len(noisy)} answers: detected@1e-4 {rate:.1%}, z {z:.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="task accuracy (greedy)")
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "s-", label=f"{args.length}-token texts detected, p<1e-4")
    ax.set_xlabel("delta")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{teacher.name}: watermark strength trade-off (gamma {args.gamma}, context {args.context})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
