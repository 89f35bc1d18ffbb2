"""Parity of our KGW detector and logits bias with an independent implementation: MarkLLM's KGW.

MarkLLM pins dependencies of its own, so it lives in a separate venv and runs as a subprocess
(bench/markllm_side.py); nothing of it is imported here. Texts: Ember's answers served with our watermark
(temperature 1), the same prompts served without one, and uniform random token strings (every context).

Checked, with deduplication off (MarkLLM scores every token, repeats included):
1. our z-scores == MarkLLM's `score_sequence` when its green-list lookup answers from our key's lists;
2. our z-scores under MarkLLM's own leftHash green lists == MarkLLM's native z-scores;
3. our engine's logits processor == MarkLLM's `KGWLogitsProcessor` on random logits, same green lists.
With deduplication on (our default) the z of the repetitive micro-world answers is printed beside it.

    python -m venv /tmp/markllm-venv && /tmp/markllm-venv/bin/pip install torch==2.13.0 markllm==0.1.5
    python bench/markllm_parity.py --venv /tmp/markllm-venv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from watermark import served, texts_of

from stillhouse.embedded import teacher_path, world
from stillhouse.forensics.detect import binomial_test, detect_ids, load_tokenizer, windows
from stillhouse.forensics.green import green_mask
from stillhouse.forensics.key import WatermarkKey
from stillhouse.forensics.processor import WatermarkProcessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, required=True, help="a venv with markllm installed")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--random-texts", type=int, default=50)
    ap.add_argument("--gamma", type=float, default=0.25)
    args = ap.parse_args()
    python = args.venv / "bin" / "python"
    if not python.exists():
        sys.exit(f"no python in {args.venv}; make the venv as the docstring shows")

    key = WatermarkKey(b"markllm-parity-secret-0123456789", gamma=args.gamma, delta=2.0, context=1)
    tok = load_tokenizer(teacher_path())
    vocab = len(tok)
    chats = [r["messages"] for r in world.make_prompts(args.prompts, split="heldout", seed=11)]
    texts: dict[str, list[list[int]]] = {}
    for name, k in (("watermarked", key), ("plain", None)):
        answers = served(teacher_path(), k, chats, max_tokens=128, temperature=1.0)
        texts[name] = texts_of([tok(a, add_special_tokens=False)["input_ids"] for a in answers], 200)
    rng = np.random.default_rng(0)
    texts["random"] = [rng.integers(0, vocab, 200).tolist() for _ in range(args.random_texts)]
    every = [t for group in texts.values() for t in group]

    histories = rng.integers(0, vocab, (64, 8)).tolist()
    logits = rng.normal(size=(64, vocab)).astype(np.float32)
    job = {
        "vocab_size": vocab,
        "gamma": key.gamma,
        "delta": key.delta,
        "hash_key": 15485863,  # MarkLLM's default
        "green": {t: np.flatnonzero(green_mask(key, (t,), vocab)).tolist() for t in range(vocab)},
        "texts": every,
        "histories": histories,
        "logits": logits.tolist(),
    }
    done = subprocess.run([str(python), str(Path(__file__).parent / "markllm_side.py")], input=json.dumps(job),
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        sys.exit(f"MarkLLM's side failed:\n{done.stderr[-2000:]}")
    theirs = json.loads(done.stdout)

    ours = [detect_ids(key, [t], dedup=False).z for t in every]
    native = {int(t): set(ids) for t, ids in theirs["native_green"].items()}

    def native_score(ids: list[int]) -> float:
        pairs = windows(ids, 1)
        return binomial_test(sum(t in native[c[0]] for c, t in pairs), len(pairs), key.gamma).z

    ours_native = [native_score(t) for t in every]
    biased = WatermarkProcessor(key)(histories, torch.from_numpy(logits)).numpy()

    print(f"{len(every)} texts ({', '.join(f'{len(v)} {k}' for k, v in texts.items())}), vocab {vocab}, "
          f"gamma {key.gamma}, context 1, dedup off")  # fmt: skip
    dz = np.abs(np.array(ours) - np.array(theirs["z"]))
    dn = np.abs(np.array(ours_native) - np.array(theirs["native_z"]))
    db = np.abs(biased - np.array(theirs["biased"], dtype=np.float32))
    print(f"1. our key's lists, our z vs MarkLLM's scorer:        max |dz| {dz.max():.2e}")
    print(f"2. MarkLLM's lists, our z vs MarkLLM's native scorer: max |dz| {dn.max():.2e}")
    print(f"3. logits bias, our processor vs MarkLLM's:           max |d| {db.max():.2e}")
    for name, group in texts.items():
        off = [detect_ids(key, [t], dedup=False) for t in group]
        on = [detect_ids(key, [t]) for t in group]
        print(f"   {name:>11}: median z {np.median([s.z for s in off]):6.2f} dedup off, "
              f"{np.median([s.z for s in on]):6.2f} dedup on ({np.median([s.scored for s in on]):.0f} of "
              f"{np.median([s.tokens for s in on]):.0f} pairs distinct)")  # fmt: skip
    ok = dz.max() < 1e-9 and dn.max() < 1e-9 and db.max() < 1e-6
    print("parity: " + ("holds" if ok else "FAILS"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
