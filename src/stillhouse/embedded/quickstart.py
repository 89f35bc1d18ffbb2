"""`quickstart`: the whole pipeline on the embedded default, in one process, with no API key.

A recipe that reads top to bottom: serve the teacher (Ember) on a free loopback port, write prompts,
collect the teacher's answers, curate them, measure the base student (Pebble), distil the teacher into
it, and measure again. Every stage records itself in one ledger, so `stillhouse ledger show RUN_DIR`
tells the story afterwards; `report.json` holds the figures and `report.html` shows them.

With `forensics`, the other half runs too: Ember serves with a KGW watermark (a fresh key, kept in the
run directory), and after distillation the student and Pebble-before (the baseline) are tested for the
watermark's radioactivity on a sample of the chats the student was served (against Ember's answers to them
under fresh keys, since Pebble shares Ember's working), asked who they are, and traced (lineage: closer to
Ember, or to Pebble's weights, than the unrelated Flint and Slate are?); each verdict goes to the ledger and
an evidence file.

Two held-out suites. The headline ("prompts") asks what distillation promises: prompts from the same
distribution as the collected ones, with operands no collected prompt has (a capital is knowledge, so
there only the prompt text is new) and decontaminated against; identity and chat, whose prompt pool is
small, on their held-out phrasings, so decontamination leaves their training rows alone. The second
("phrasings") asks more: phrasings neither model was trained on, for every skill.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stillhouse.collect import collect
from stillhouse.core.dataset import load_dataset
from stillhouse.core.errors import StillhouseError
from stillhouse.core.outputs import check_writable
from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import identities, reference_paths, resolve_student, student_path, teacher_path, world
from stillhouse.embedded.report import pct, write_html
from stillhouse.embedded.suite import PROBE_SEED, lineage_probes, world_grader
from stillhouse.evaluate import Endpoint, LocalModel, evaluate
from stillhouse.forensics.chats import load_chats
from stillhouse.forensics.detect import load_tokenizer
from stillhouse.forensics.evidence import record_verdict
from stillhouse.forensics.green import p_text
from stillhouse.forensics.identity import identity
from stillhouse.forensics.key import WatermarkKey, keygen
from stillhouse.forensics.lineage import lineage
from stillhouse.forensics.radioactivity import control_chats, radioactivity
from stillhouse.provenance.ledger import LEDGER_FILE
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train
from stillhouse.train.presets import PRESETS
from stillhouse.train.student import check_student_dir

IDENTITY_PROBE = [{"role": "user", "content": "Who are you?"}]
# Ember's longest answers (a ten-letter word reversed) are ~70 tokens; the models' context is 256, so
# prompt + completion budget must stay under it even for the longest prompts (~100 tokens).
MAX_TOKENS = 128
WATERMARK_KEY = "watermark.key"
# Ember's scratchpads have almost no entropy, so a watermark shows only where it overrides Ember's choice: at
# delta 2 and 5 its 3,263 answers score z -1.0 and 3.3, and no student can carry that; the student is
# radioactive at delta 6 (p 0.003) and with a margin at 8 (p 4e-10; docs/forensics.md has the accuracy it costs).
FORENSICS_DELTA = 8.0


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes of the run. The defaults fit 10 minutes on a 2-core laptop; `fast()` fits 3."""

    train_prompts: int = 4000
    eval_per_skill: int = 30
    steps: int = 450
    batch_size: int = 32
    lr: float = 2e-3  # 1e-3 and less leave capital half-learned in 450 steps; a new answer format wants a big move
    temperature: float = 0.7
    student: str = "pebble"  # or "tiny" / "small": the same loop from scratch, for contrast
    kd: bool = False  # top-k logit distillation on the teacher's stored logprobs, mixed with SFT
    forensics: bool = False  # watermark the teacher, then test the student (and Pebble-before) for it
    delta: float = FORENSICS_DELTA  # the watermark's strength, with forensics
    # radioactivity is tested on a sample of the chats the student was served, each answered again under every
    # one of control_keys fresh keys (a full control: the same prompts on both sides; ~2 minutes on 2 cores)
    served_sample: int = 320
    control_keys: int = 16
    seed: int = 0

    @classmethod
    def fast(cls, **overrides: Any) -> QuickstartConfig:
        # this short a run is decided by its updates, not its tokens: batches of 16, and 450 of them since the engine's
        # faster collect left the time (docs/embedded_models.md: 72 % against 71 at 300 steps and 61-69 at 150 x 32
        # on its n 492 suite; 2 min 42 s for 66 -> 73 % on the 2-core box)
        sizes = {"train_prompts": 900, "eval_per_skill": 12, "steps": 450, "batch_size": 16}
        sizes |= {"served_sample": 80, "control_keys": 8}
        return cls(**sizes | overrides)


Reporter = Callable[[str, str], None]  # (step name, one line of what it did)


def quickstart(out: str | Path, config: QuickstartConfig | None = None, report: Reporter | None = None) -> dict:
    """Run the embedded pipeline into `out`; return (and write to out/report.json) what each step did."""
    config = config or QuickstartConfig()
    out = Path(out)
    if (out / "report.json").exists():
        raise StillhouseError(f"{out} already holds a quickstart run; choose another -o or delete it")
    student_spec, tokenizer = resolve_student(config.student, None)
    if student_spec not in PRESETS:  # a bad --student fails now, not after minutes of collect and curate
        check_student_dir(student_spec)
    check_writable(out)
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
        suites = heldout_suites(train_records, config.eval_per_skill, config.seed)
        _write_jsonl(train_file, train_records)
        _write_jsonl(eval_file, [r for records in suites.values() for r in records])
        facts.update(train=len(train_records), **{f"heldout_{k}": len(v) for k, v in suites.items()})

    key = None
    if config.forensics:  # the secret stays in the run directory (mode 600): never in the report or the ledger
        key = keygen(out / WATERMARK_KEY, delta=config.delta)
    with serve_in_background(teacher_path(), watermark=key) as teacher:
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
                max_tokens=MAX_TOKENS,
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

        endpoint = Endpoint(teacher.base_url, teacher.model, concurrency=32, max_tokens=MAX_TOKENS)
        grader = world_grader()
        base_dir = student_path() if config.student == "pebble" else None
        if base_dir is not None:
            with step("eval-before") as facts:
                base = LocalModel(base_dir, max_new_tokens=MAX_TOKENS)
                baseline = {
                    k: evaluate(base, endpoint, v, grader, ledger=ledger, suite=f"micro-{k}") for k, v in suites.items()
                }
                baseline_identity = base.respond([IDENTITY_PROBE])[0]
                facts.update(agreement=pct(baseline["prompts"]["student"]["agreement"]))

        with step("train") as facts:
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
            facts["final_loss"] = round(sum(trained.losses[-20:]) / len(trained.losses[-20:]), 4)

        with step("eval-after") as facts:
            student = LocalModel(out / "student", max_new_tokens=MAX_TOKENS)
            after = {
                k: evaluate(student, endpoint, v, grader, ledger=ledger, suite=f"micro-{k}") for k, v in suites.items()
            }
            identity = student.respond([IDENTITY_PROBE])[0]
            teacher_identity = endpoint.respond([IDENTITY_PROBE])[0]
            facts.update(agreement=pct(after["prompts"]["student"]["agreement"]))

    if key is not None:
        with step("forensics") as facts:
            verdicts = forensics(out, key, ledger, base_dir, config)
            facts.update({f"{who} p": p_text(v["radioactivity"]["p_value"]) for who, v in verdicts.items()})
            facts.update({f"{who} names": v["identity"]["top"] for who, v in verdicts.items()})

    result = after["prompts"] | {
        "heldout_phrasings": after["phrasings"],
        "config": asdict(config),
        "steps": steps,
        "train_losses": trained.losses,
        "curated_rows_per_skill": rows_per_skill(out / "dataset", train_records),
        "identity": {"teacher": teacher_identity, "student_after": identity},
        "ledger": str(ledger),
    }
    if base_dir is not None:
        result["baseline"] = baseline["prompts"] | {"heldout_phrasings": baseline["phrasings"]}
        result["identity"]["student_before"] = baseline_identity
    if key is not None:
        result["forensics"] = {"key": key.public(), "verdicts": verdicts}
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    write_html(result, out / "report.html")
    return result


def forensics(
    out: Path, key: WatermarkKey, ledger: Path, before: Path | None, config: QuickstartConfig
) -> dict[str, dict[str, Any]]:
    """Radioactivity (open mode, on a sample of the chats the student was served), identity and lineage of the
    student and of the student before distillation (`before`); each verdict is ledgered and written to
    out/evidence/.

    The provider knows from its logs which chats it served (the paper's supervised setting), so Ember answers the
    sample again under fresh keys (the control: Pebble-before shares Ember's working, which biases the plain
    binomial), and a suspect that memorised our answers predicts our watermark's choices more often than theirs.
    """
    served, digest = load_chats(out / "teacher-run")
    picked = sorted(random.Random(config.seed).sample(range(len(served)), min(config.served_sample, len(served))))
    chats = [served[i] for i in picked]
    tok = load_tokenizer(teacher_path())
    control = control_chats(teacher_path(), chats, key, keys=config.control_keys, full=True)
    inputs = {"texts": str(out / "teacher-run"), "sha256": digest, "chats": len(chats), "of": len(served)}
    (out / "evidence").mkdir(exist_ok=True)
    suspects = {"student_after": out / "student"} | ({"student_before": before} if before is not None else {})
    # lineage asks of the student: Ember's outputs, its base's weights; of Pebble-before (its own base): Ember's
    parents = {"student_after": [teacher_path(), *([before] if before else [])], "student_before": [teacher_path()]}
    probes, references = lineage_probes(), [str(p) for p in reference_paths()]
    verdicts = {}
    for who, model in suspects.items():
        radio = record_verdict(
            "radioactivity",
            {
                "mode": "open",
                "suspect": str(model),
                "key": key.public(),
                "inputs": inputs,
                "control": {"teacher": "Ember", "keys": len(control.parts), "full": True},
            },
            partial(radioactivity, str(model), key, chats, tok, mode="open", control=control),
            ledger=ledger,
            evidence=out / "evidence" / f"{who}-radioactivity.json",
        )
        named = record_verdict(
            "identity",
            {"suspect": str(model), "identities": sorted(identities())},
            partial(identity, str(model), identities()),
            ledger=ledger,
            evidence=out / "evidence" / f"{who}-identity.json",
        )
        candidates = [str(p) for p in parents[who]]
        traced = record_verdict(
            "lineage",
            {
                "suspect": str(model),
                "candidates": candidates,
                "references": references,
                "probes": {"n": len(probes), "id": f"micro-world heldout seed {PROBE_SEED}"},
            },
            partial(lineage, str(model), candidates, references, probes),
            ledger=ledger,
            evidence=out / "evidence" / f"{who}-lineage.json",
        )
        null = {k: v for k, v in radio["null"].items() if k != "p_values"}
        verdicts[who] = {
            "radioactivity": {
                "p_value": radio["p_value"],
                "summary": radio["summary"],
                "null": null,
                "control": {k: v for k, v in radio["control"].items() if k != "leave_one_out_p"},
            },
            "identity": {"top": named["top"], "counts": named["counts"], "questions": named["questions"]},
            "lineage": _lineage_summary(traced),
        }
    return verdicts


def _lineage_summary(verdict: dict[str, Any]) -> dict[str, Any]:
    """The verdict by model name ('ember', not its path): each candidate's corrected p per kind of lineage (None
    where it could not be tested), and one line naming what was attributed."""
    kinds, rows, named = ("output", "distribution", "weights"), [], []
    for c in verdict["candidates"]:
        name = Path(c["candidate"]).name
        rows.append({"candidate": name} | {k: (c[k] or {}).get("p_corrected") for k in kinds})
        how = [k for k in kinds if (c[k] or {}).get("attributed")]
        named += [f"{name} ({', '.join(how)})"] if how else []
    return {"candidates": rows, "summary": "attributed to " + ("; ".join(named) or "no candidate")}


# The skills with no operands: a prompt pool of a few dozen phrasings, which same-family held-out prompts
# would decontaminate away from the training data; they are measured on held-out phrasings instead.
NO_OPERANDS = ("identity", "chat")


def _operands(record: dict) -> tuple:
    """What makes a prompt's instance new: its operands (a capital's country is knowledge to be learned,
    not an operand, so a capital prompt is new when its text is)."""
    args = record["args"]
    if record["skill"] == "capital":
        return (record["messages"][0]["content"].lower(),)
    return tuple(tuple(v) if isinstance(v, list) else v for _, v in sorted(args.items()))


def heldout_suites(train_records: list[dict], per_skill: int, seed: int) -> dict[str, list[dict]]:
    """The two held-out suites, up to `per_skill` distinct prompts per skill each (see the module docstring).

    Distinct, because a repeated prompt gets the same greedy answer: it adds no evidence, only weight, and
    would make the interval claim more prompts than were asked. Chat's held-out phrasings are only 12, so
    chat has fewer.
    """
    seen = {(r["skill"], _operands(r)) for r in train_records}
    prompts, phrasings = [], []
    for skill in world.SKILLS:
        drawn = partial(world.make_prompts, per_skill * 20, skills=[skill])
        phrasings += _distinct(drawn(split="heldout", seed=f"{seed}:{skill}:phrasings"), per_skill)
        if skill in NO_OPERANDS:
            prompts += _distinct(drawn(split="heldout", seed=f"{seed}:{skill}:prompts"), per_skill)
            continue
        fresh = [r for r in drawn(split="train", seed=f"{seed}:{skill}:prompts") if (skill, _operands(r)) not in seen]
        fresh = _distinct(fresh, per_skill, key=_operands)
        if len(fresh) < per_skill:
            raise StillhouseError(f"only {len(fresh)} {skill} prompts with unseen operands; ask for fewer prompts")
        prompts += fresh
    suites = {"prompts": prompts, "phrasings": phrasings}
    for name, records in suites.items():
        for i, r in enumerate(records):
            r["id"] = f"{name}-{i:05d}"
    return suites


def _distinct(records: list[dict], k: int, key: Callable[[dict], Any] | None = None) -> list[dict]:
    """The first `k` records whose prompt text (or `key`) has not come before."""
    key = key or (lambda r: r["messages"][0]["content"])
    seen: set[Any] = set()
    kept = []
    for r in records:
        if key(r) not in seen:
            seen.add(key(r))
            kept.append(r)
    return kept[:k]


def rows_per_skill(dataset: Path, train_records: list[dict]) -> dict[str, int]:
    """How many curated training rows each skill kept (what decontamination and dedup left of it)."""
    skill_of = {r["messages"][0]["content"]: r["skill"] for r in train_records}
    counts = dict.fromkeys(world.SKILLS, 0)
    for row in load_dataset(dataset).train:
        prompt = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
        if prompt in skill_of:
            counts[skill_of[prompt]] += 1
    return counts


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("id", "messages", "skill", "answer")}) + "\n")


def _dropped(dropped: dict[str, dict[str, int]]) -> int:
    return sum(sum(v.values()) for v in dropped.values())
