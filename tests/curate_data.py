"""Run stores with planted duplicates, contamination, refusals and failures, and the exact counts to expect."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillhouse.collect.store import Exchange, RunStore, request_key
from stillhouse.core.ids import now
from stillhouse.provenance.ledger import Ledger, ledger_path

BASE_URL = "http://127.0.0.1:9/v1"
MODEL = "ember"
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "sa", "tu", "vi", "zo") for b in range(200)]

# Evaluation items (longer than 13 words, and one short one matched whole).
EVAL_A = [
    "A farmer has seventeen sheep and all but nine run away so how many sheep are left in the field",
    "Which planet in our solar system has the longest day measured in Earth hours and why is that so",
]
EVAL_B = ["The quick brown fox jumps over the lazy dog while the farmer counts his remaining sheep slowly"]
EVAL_SHORT = "name the largest ocean"


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def response(text: str, finish: str = "stop", logprob: float | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    if logprob is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": logprob, "top_logprobs": []}]}
    return {"id": "chatcmpl-x", "object": "chat.completion", "model": MODEL, "choices": [choice], "usage": {}}


@dataclass
class Planted:
    """What a store holds, and how many examples each step must remove."""

    exchanges: list[Exchange] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)
    contamination: dict[str, int] = field(default_factory=dict)
    unique: int = 0  # examples that survive everything

    def add(self, prompt: str, resp: dict[str, Any] | None, *, status: str = "ok", sample: int = 0, **meta: Any):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
        key = request_key(BASE_URL, MODEL, messages, {"temperature": 0.0}, sample)
        self.exchanges.append(
            Exchange(
                key=key,
                prompt_id=f"p{len(self.exchanges)}",
                sample=sample,
                request={"model": MODEL, "messages": messages, "temperature": 0.0},
                status=status,
                run_id="collect-test-1",
                at=now(),
                response=resp,
                error=None if status == "ok" else "HTTP 500",
                meta=meta,
            )
        )


def planted(seed: int = 0) -> Planted:
    """40 unique examples, plus planted items each removed by exactly one step."""
    rng = random.Random(seed)
    p = Planted()
    uniques = [(f"Question {i}: {words(rng, 10)}?", words(rng, 80)) for i in range(40)]
    for i, (q, a) in enumerate(uniques):
        p.add(q, response(a, logprob=-1.0), skill=f"s{i % 4}")
    p.unique = 40
    # Exact duplicates: the same text up to case and whitespace, collected again as another sample.
    for q, a in uniques[:5]:
        p.add(q.upper(), response("  " + a.replace(" ", "   ") + "\n"), sample=1)
    # Near duplicates: one extra word, or changed punctuation (same words, different text).
    for q, a in uniques[10:13]:
        p.add(q, response(a + " indeed"), sample=2)
    for q, a in uniques[13:15]:
        p.add(q.replace("?", "!"), response(a + "."), sample=2)
    # Same prompt, a wholly different answer: not a duplicate of anything (prompt is a small share).
    for q, _ in uniques[20:23]:
        p.add(q, response(words(rng, 80)), sample=3)
    p.unique += 3
    p.expected = {"exact_dedup": 5, "near_dedup": 5}
    for text in ("I'm sorry, but I can't help with that.", "As an AI language model, I cannot do this."):
        p.add(f"Refuse {words(rng, 6)}", response(text))
    p.add(f"Refuse {words(rng, 6)}", response("I must decline to answer questions about " + words(rng, 20)))
    p.expected["refusal"] = 3
    for _ in range(2):
        p.add(f"Long {words(rng, 6)}", response(words(rng, 60), finish="length"))
    p.expected["truncated"] = 2
    p.add(f"Empty {words(rng, 6)}", response(""))
    p.add(f"Blank {words(rng, 6)}", response("   \n"))
    p.expected["empty"] = 2
    p.add(f"Fail {words(rng, 6)}", None, status="error")
    p.expected["failed"] = 1
    p.add(f"Loop {words(rng, 6)}", response("the cat sat on the mat " * 20))
    p.expected["repetition"] = 1
    # Contamination: eval items inside prompts and answers, and the short item verbatim.
    p.add(f"Puzzle: {EVAL_A[0]}?", response(words(rng, 30)))
    p.add(f"{words(rng, 5)} {EVAL_A[1].upper()}", response(words(rng, 30)))
    p.add(f"Say {words(rng, 5)}", response(f"Sure. {EVAL_B[0]}."))
    p.add(f"Please {EVAL_SHORT}.", response("The Pacific Ocean."))
    # Shares only 12 words in a row with EVAL_A[0]: not contaminated at n=13.
    p.add(f"Note {' '.join(EVAL_A[0].split()[:12])} {words(rng, 4)}", response(words(rng, 30)))
    p.unique += 1
    p.contamination = {"setA": 2, "setB": 1, "short": 1}
    p.expected["decontamination"] = 4
    return p


def write_run(run_dir: Path, p: Planted, *, terms: str = "own", purpose: str = "distillation") -> Path:
    with RunStore(run_dir) as store:
        store.put_many(p.exchanges)
    with Ledger(ledger_path(run_dir)) as led:
        teacher = {"host": "127.0.0.1", "model": MODEL, "base_url": BASE_URL}
        led.append(
            "collect-test-1",
            "collect.start",
            {"teacher": teacher, "terms": terms, "purpose": purpose, "permission": None},
        )
        led.append(
            "collect-test-1", "collect.end", {"succeeded": len(p.exchanges) - 1, "failed": 1, "ok": True, "error": None}
        )
    return run_dir


def write_evals(root: Path) -> list[tuple[str, Path]]:
    import json

    a, b, short = root / "a.jsonl", root / "b.txt", root / "short.json"
    a.write_text("".join(json.dumps({"question": q, "answer": "42"}) + "\n" for q in EVAL_A))
    b.write_text("\n".join(EVAL_B) + "\n")
    short.write_text(json.dumps([{"messages": [{"role": "user", "content": EVAL_SHORT}]}]))
    return [("setA", a), ("setB", b), ("short", short)]
