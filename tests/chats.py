"""Small hand-built chat datasets in the curated layout, for training and eval tests."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch


def skill_chats(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chats of two toy skills with their graded answers, ASCII only."""
    rng = random.Random(seed)
    rows = []
    words = ["planet", "stone", "river", "cloud", "lamp", "tiger", "bread", "music"]
    for i in range(n):
        if i % 2:
            a, b = rng.randint(1, 20), rng.randint(1, 20)
            q, ans, skill = f"What is {a} plus {b}?", str(a + b), "add"
            reply = f"{a} + {b} = {ans}"
        else:
            w = rng.choice(words)
            q, ans, skill = f"Reverse the word {w}.", w[::-1], "reverse"
            reply = ans
        rows.append(
            {
                "id": f"p{i}",
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}],
                "skill": skill,
                "answer": ans,
            }
        )
    return rows


def write_dataset(path: Path, rows: list[dict[str, Any]], card: dict[str, Any] | None = None) -> Path:
    """A curated-dataset directory: data/train-00000.parquet (+ a card with YAML front matter)."""
    (path / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "data" / "train-00000.parquet")
    if card is not None:  # the `stillhouse:` block of the card's front matter, as curate writes it
        front = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in card.items())
        (path / "README.md").write_text(f"---\nstillhouse:\n{front}\n---\n\n# dataset\n")
    return path


@torch.no_grad()
def add_teacher_logprobs(rows: list[dict[str, Any]], model, tok, k: int = 5) -> list[dict[str, Any]]:
    """Attach OpenAI-style logprobs.content for each assistant answer, as an API would report them
    had `model` generated exactly that answer: per token its logprob and the top-k alternatives."""
    out = []
    for row in rows:
        prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        answer = tok(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
        logp = model(torch.tensor([prompt + answer])).logits[0].log_softmax(-1)
        content = []
        for j, tid in enumerate(answer):
            dist = logp[len(prompt) + j - 1]
            top = dist.topk(k + 3)  # drop tokens that are partial UTF-8 (their text does not say their bytes)
            keep = [j for j, t in enumerate(top.indices.tolist()) if "\ufffd" not in tok.decode([t])][:k]
            top = dist[top.indices[keep]], top.indices[keep]
            content.append(
                {
                    "token": tok.decode([tid]),
                    "logprob": float(dist[tid]),
                    "bytes": list(tok.decode([tid]).encode()),
                    "top_logprobs": [
                        {
                            "token": tok.decode([int(t)]),
                            "logprob": float(v),
                            "bytes": list(tok.decode([int(t)]).encode()),
                        }
                        for v, t in zip(*top, strict=True)
                    ],
                }
            )
        assert math.isfinite(content[0]["logprob"])
        out.append(row | {"logprobs": content})
    return out
