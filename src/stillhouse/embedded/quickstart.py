"""`quickstart`: the whole pipeline on the embedded default, in one process, with no API key.

A recipe that reads top to bottom: serve the teacher (Ember) on a free loopback port, write prompts,
collect the teacher's answers, curate them, measure the base student (Pebble), distil the teacher into
it, and measure again. Every stage records itself in one ledger, so `stillhouse ledger show RUN_DIR`
tells the story afterwards; `report.json` holds the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stillhouse.collect import collect
from stillhouse.core.errors import StillhouseError
from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import resolve_student, student_path, teacher_path, world
from stillhouse.evaluate import Endpoint, LocalModel, evaluate
from stillhouse.provenance.ledger import LEDGER_FILE
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train

IDENTITY_PROBE = [{"role": "user", "content": "Who are you?"}]


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes of the run. The defaults fit 10 minutes on a 2-core laptop; `fast()` fits 3."""

    train_prompts: int = 3000
    eval_per_skill: int = 30
    steps: int = 450
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 0.7
    student: str = "pebble"  # or "tiny" / "small": the same loop from scratch, for contrast
    kd: bool = False  # top-k logit distillation on the teacher's stored logprobs, mixed with SFT
    seed: int = 0

    @classmethod
    def fast(cls, **overrides: Any) -> QuickstartConfig:
        return cls(**{"train_prompts": 900, "eval_per_skill": 12, "steps": 150} | overrides)


Reporter = Callable[[str, str], None]  # (step name, one line of what it did)


def quickstart(out: str | Path, config: QuickstartConfig | None = None, report: Reporter | None = None) -> dict:
    """Run the embedded pipeline into `out`; return (and write to out/report.json) what each step did."""
    config = config or QuickstartConfig()
    out = Path(out)
    if (out / "report.json").exists():
        raise StillhouseError(f"{out} already holds a quickstart run; choose another -o or delete it")
    out.mkdir(parents=True, exist_ok=True)
    ledger = out / LEDGER_FILE
    say = report or (lambda step, line: None)
    steps: dict[str, dict[str, Any]] = {}

    @contextmanager
    def step(name: str) -> Iterator[dict[str, Any]]:
        facts: dict[str, Any] = {}
        t0 = time.perf_counter()
        yield facts
        facts["seconds"] = round(time.perf_counter() - t0, 1)
        steps[name] = facts
        say(name, ", ".join(f"{k} {v}" for k, v in facts.items()))

    with step("prompts") as facts:
        train_file, eval_file = out / "prompts-train.jsonl", out / "prompts-heldout.jsonl"
        train_records = world.make_prompts(config.train_prompts, split="train", seed=config.seed + 1)
        eval_records = [
            r
            for s in world.SKILLS
            for r in world.make_prompts(config.eval_per_skill, skills=[s], split="heldout", seed=config.seed + 2)
        ]
        _write_jsonl(train_file, train_records)
        _write_jsonl(eval_file, eval_records)
        facts.update(train=len(train_records), heldout=len(eval_records), skills=len(world.SKILLS))

    with serve_in_background(teacher_path()) as teacher:
        with step("collect") as facts:
            collected = collect(
                train_file,
                base_url=teacher.base_url,
                model=teacher.model,
                out=out / "teacher-run",
                ledger=ledger,
                purpose="distillation",
                terms="own",
                api_key_env=None,
                temperature=config.temperature,
                max_tokens=160,
                seed=config.seed,
                top_logprobs=5 if config.kd else None,
                concurrency=64,
            )
            facts.update(ok=collected.ok, failed=collected.failed, tokens=collected.completion_tokens)

        with step("curate") as facts:
            curated = curate(
                [out / "teacher-run"],
                out / "dataset",
                evals=[("heldout", eval_file)],
                config=CurateConfig(seed=config.seed),
                ledger=ledger,
            )
            facts.update(rows=sum(curated.rows.values()), dropped=_dropped(curated.dropped))

        endpoint = Endpoint(teacher.base_url, teacher.model, concurrency=32)
        base_dir = student_path() if config.student == "pebble" else None
        if base_dir is not None:
            with step("eval-before") as facts:
                base = LocalModel(base_dir)
                baseline = evaluate(base, endpoint, eval_records, ledger=ledger, suite="micro-heldout")
                baseline_identity = base.respond([IDENTITY_PROBE])[0]
                facts.update(agreement=baseline["student"]["agreement"], accuracy=baseline["student"]["accuracy"])

        with step("train") as facts:
            student_spec, tokenizer = resolve_student(config.student, None)
            trained = train(
                out / "dataset",
                out / "student",
                TrainConfig(
                    student=student_spec,
                    tokenizer=tokenizer,
                    kd="topk" if config.kd else None,
                    max_steps=config.steps,
                    batch_size=config.batch_size,
                    lr=config.lr,
                    seed=config.seed,
                ),
                ledger=ledger,
                progress=report is not None,
            )
            facts.update(steps=trained.steps, tokens=trained.tokens, tokens_per_s=round(trained.tokens_per_s))
            facts["final_loss"] = round(trained.losses[-1], 4) if trained.losses else None

        with step("eval-after") as facts:
            student = LocalModel(out / "student")
            after = evaluate(student, endpoint, eval_records, ledger=ledger, suite="micro-heldout")
            identity = student.respond([IDENTITY_PROBE])[0]
            teacher_identity = endpoint.respond([IDENTITY_PROBE])[0]
            facts.update(agreement=after["student"]["agreement"], accuracy=after["student"]["accuracy"])

    result = after | {
        "config": asdict(config),
        "steps": steps,
        "identity": {"teacher": teacher_identity, "student_after": identity},
        "ledger": str(ledger),
    }
    if base_dir is not None:
        result["baseline"] = baseline
        result["identity"]["student_before"] = baseline_identity
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("id", "messages", "skill", "answer")}) + "\n")


def _dropped(dropped: dict[str, dict[str, int]]) -> int:
    return sum(sum(v.values()) for v in dropped.values())
