"""`synth`: Self-Instruct-style prompt synthesis from a few seed tasks.

Each request shows the teacher some seed tasks and some it already wrote, and asks for new ones;
a new task is kept only when its ROUGE-L against every kept task (seeds included) stays below 0.7.
Requests are sent in rounds through the collection engine (stillhouse.collect), which owns rate
limits, retries, budget caps, the run store and the ledger. Task sampling is seeded and answers are
looked up by their request key, so a re-run rebuilds the same requests, finds their answers in the
store, and sends only what was never answered: the kept list comes out the same.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, model_validator

from stillhouse.collect import CollectResult, acollect
from stillhouse.collect.store import Exchange, RunStore, request_key
from stillhouse.core import aio
from stillhouse.core.client import host_of, public_url
from stillhouse.core.config import Config
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json, file_sha256, new_run_id
from stillhouse.core.outputs import atomic_write, check_output
from stillhouse.provenance.ledger import Ledger, check_ledger_path, ledger_path, stage_run
from stillhouse.provenance.terms import Purpose, check

SEED_FIELDS = ("prompt", "instruction", "task", "text", "question")
_DRAWS = 16  # draws of shown tasks before a round gives up finding a request not asked before


class SynthConfig(Config):
    """How synthesis asks for new tasks and judges them; every field is also a `synth` option."""

    target: int = Field(default=100, ge=1, description="New tasks wanted.")
    max_requests: int | None = Field(default=None, ge=1, description="Request budget, run total (default: --target).")
    per_request: int = Field(default=8, ge=1, le=100, description="New tasks asked for per request.")
    shown_seeds: int = Field(default=6, ge=0, description="Seed tasks shown in each request.")
    shown_kept: int = Field(default=2, ge=0, description="Already-kept synthetic tasks shown in each request.")
    max_rouge: float = Field(
        default=0.7, gt=0, le=1, description="Keep a task only below this ROUGE-L to every kept one."
    )
    min_words: int = Field(default=3, ge=1, description="Shortest task kept, in words.")
    max_words: int = Field(default=150, ge=1, description="Longest task kept, in words.")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(default=None, ge=1, description="Completion tokens per request (default: server's).")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Requests per round, all in flight at once.")
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute at most.")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute at most.")
    max_cost: float | None = Field(default=None, gt=0, description="Stop at this spend in USD (run total).")
    seed: int = Field(default=0, description="Seeds which tasks each request shows.")

    @model_validator(mode="after")
    def _words(self) -> SynthConfig:
        if self.min_words > self.max_words:
            raise ValueError(
                f"--min-words {self.min_words} is above --max-words {self.max_words}: nothing would be kept"
            )
        return self


# --- ROUGE-L ---------------------------------------------------------------------------------------


def rouge_tokens(text: str) -> list[str]:
    """Lowercased alphanumeric runs, as rouge-score tokenises for ROUGE-L."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, bit-parallel (Hyyrö 2004): one big-int step per token of b."""
    return _lcs_with(_masks(a), len(a), b)


def _masks(a: Sequence[str]) -> dict[str, int]:
    """For each token of a, the bit set of its positions."""
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


def _lcs_with(masks: dict[str, int], m: int, b: Sequence[str]) -> int:
    full = (1 << m) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    return 2 * lcs / (len(a) + len(b))


class KeptTasks:
    """Kept tasks, bucketed by token count: F1 >= t needs the shorter one at least t/(2-t) of the longer,
    so a candidate is compared only with kept tasks of a compatible length."""

    def __init__(self, max_rouge: float):
        self.max_rouge = max_rouge
        self.texts: list[str] = []
        self._by_length: dict[int, list[list[str]]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, tokens: list[str] | None = None) -> None:
        tokens = tokens if tokens is not None else rouge_tokens(text)
        self.texts.append(text)
        self._by_length.setdefault(len(tokens), []).append(tokens)

    def too_similar(self, tokens: list[str]) -> bool:
        m, t = len(tokens), self.max_rouge
        if m == 0:
            return True
        masks = _masks(tokens)
        lo, hi = int(m * t / (2 - t)), int(m * (2 - t) / t) + 1
        for n in range(max(1, lo), hi + 1):
            for other in self._by_length.get(n, ()):
                if 2 * _lcs_with(masks, m, other) / (m + n) >= t:
                    return True
        return False


# --- prompting and parsing -------------------------------------------------------------------------


def instruction(shown: Sequence[str], want: int) -> list[dict[str, str]]:
    listed = "\n".join(f"{i}. {task}" for i, task in enumerate(shown, 1))
    text = (
        "Here are some example tasks a user might give an assistant:\n\n"
        f"{listed}\n\n"
        f"Write {want} new tasks that differ from these in topic and form. Make each one self-contained "
        f"and answerable in text. Reply with only a numbered list, continuing from {len(shown) + 1}."
    )
    return [{"role": "user", "content": text}]


_ITEM = re.compile(r"^\s*(?:(?:task\s*)?\d+\s*[.):]|[-*\u2022])\s*(.*\S)\s*$", re.IGNORECASE)


def parse_tasks(text: str) -> list[str]:
    """Numbered (or bulleted) items, each with its continuation lines; unnumbered text gives one task per line."""
    items: list[str] = []
    open_item = False
    for line in text.splitlines():
        if m := _ITEM.match(line):
            items.append(m.group(1))
            open_item = True
        elif not line.strip():
            open_item = False
        elif open_item:
            items[-1] += " " + line.strip()
    if not items:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    return [item.strip().strip("\"'").strip() for item in items]


def read_seeds(path: Path) -> list[str]:
    """Seed tasks: lines of a .txt, or records of a .jsonl with a prompt-like field or user messages."""
    if not path.is_file():
        raise StillhouseError(f"seed file {path} does not exist")
    try:
        if path.suffix == ".jsonl":
            seeds = []
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                text = next((record[f] for f in SEED_FIELDS if isinstance(record.get(f), str)), None)
                if text is None and isinstance(record.get("messages"), list):
                    text = next((m.get("content") for m in record["messages"] if m.get("role") == "user"), None)
                if not isinstance(text, str):
                    raise StillhouseError(f"{path}:{line_no}: no task text (expected one of {', '.join(SEED_FIELDS)})")
                seeds.append(text)
        else:
            seeds = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise StillhouseError(f"cannot read seed file {path}: {e}") from e
    if not seeds:
        raise StillhouseError(f"{path} holds no seed tasks")
    return seeds


# --- the synthesis loop: rounds of requests, answered by the collection engine ---------------------


@dataclass
class SynthResult:
    out: Path
    run_dir: Path
    run_id: str
    kept: list[str] = field(default_factory=list)
    requests: int = 0  # requests the synthesis used, answered now or replayed from the store
    sent: int = 0  # requests sent to the teacher by this invocation
    rejected: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)  # ok, failed, tokens and cost of the requests used
    stop_reason: str = ""  # target, max-requests, no-new-requests, or the cap collect stopped at (max-cost...)
    collect_runs: list[str] = field(default_factory=list)  # one per round that had anything to send


def synth(
    seeds: str | Path,
    out: str | Path,
    *,
    base_url: str,
    model: str,
    config: SynthConfig | None = None,
    run_dir: str | Path | None = None,
    ledger: str | Path | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    terms: str | None = None,
    purpose: Purpose = Purpose.distillation,
    permission: str | None = None,
    prices: str | Path | None = None,
    overwrite: bool = False,
) -> SynthResult:
    """Synthesise new prompts from seed tasks until `target` are kept or `max_requests` are used.

    Each round's requests go to `stillhouse.collect` as a prompts file in the run directory (default:
    next to the output, `<name>.synth/`; `rounds/<synth run>/`), so rate limits, retries, caps, the
    store and the ledger are collect's; re-running the same command resumes without re-sending
    anything. Writes PROMPTS.jsonl (id, prompt, origin) atomically.
    """
    config = config or SynthConfig()
    seeds_path = Path(seeds)
    out = check_output(out, overwrite=overwrite, inputs=[seeds_path])
    seed_tasks = read_seeds(seeds_path)
    governing = check(base_url, terms, purpose, permission)
    run_dir = Path(run_dir) if run_dir else out.with_name(out.stem + ".synth")
    budget = config.max_requests if config.max_requests is not None else config.target
    params = {
        k: v for k, v in (("temperature", config.temperature), ("max_tokens", config.max_tokens)) if v is not None
    }
    ask = functools.partial(
        acollect,
        base_url=base_url,
        model=model,
        out=run_dir,
        purpose=purpose,
        terms=terms,
        permission=permission,
        ledger=ledger,
        api_key_env=api_key_env,
        params=params,  # collect's sampling is exactly these, so `key` below is the key collect gives
        concurrency=config.concurrency,
        rpm=config.rpm,
        tpm=config.tpm,
        max_requests=budget,
        max_cost=config.max_cost,
        prices=prices,
    )

    def key(messages: list[dict[str, str]]) -> str:
        return request_key(base_url, model, messages, params, 0)

    result = SynthResult(out, run_dir, new_run_id("synth"))
    start = {
        "teacher": {"host": host_of(base_url), "model": model, "base_url": public_url(base_url)},
        "terms": governing.id if governing else terms,
        "purpose": str(purpose),
        "permission": permission,
        "config": config.model_dump(mode="json"),
        "inputs": {"seeds": str(seeds_path), "sha256": file_sha256(seeds_path)},
    }
    led_path = check_ledger_path(ledger_path(run_dir, ledger))
    with (
        RunStore(run_dir) as store,
        Ledger(led_path) as led,
        stage_run(led, "synth", start, result.run_id) as record,
    ):
        aio.run(_loop(seed_tasks, config, budget, store, ask, key, result))
        lines = (
            canonical_json({"id": f"synth-{i:06d}", "prompt": t, "origin": result.run_id}) + "\n"
            for i, t in enumerate(result.kept)
        )
        with atomic_write(out) as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")
        record.end.update(
            {
                **result.totals,
                "kept": len(result.kept),
                "requests": result.requests,
                "sent": result.sent,
                "rejected": result.rejected,
                "stop_reason": result.stop_reason,
                "collect_runs": result.collect_runs,
                "outputs": {"path": str(out), "sha256": file_sha256(out)},
            }
        )
    return result


async def _loop(
    seed_tasks: list[str],
    config: SynthConfig,
    budget: int,
    store: RunStore,
    ask: Callable[[Path], Awaitable[CollectResult]],
    key: Callable[[list[dict[str, str]]], str],
    result: SynthResult,
) -> None:
    """Fill `result` round by round: draw requests, let collect answer those the store lacks, judge the tasks."""
    rng = random.Random(config.seed)
    answered = {e.key: e for e in store.exchanges("ok")}
    kept = KeptTasks(config.max_rouge)
    for task in seed_tasks:
        kept.add(task)
    asked: set[tuple[str, ...]] = set()
    rejected: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for round_no in itertools.count():
        if len(result.kept) >= config.target:
            result.stop_reason = "target"
        elif result.requests >= budget:
            result.stop_reason = "max-requests"
        if result.stop_reason:
            break
        batch = []
        for _ in range(min(config.concurrency, budget - result.requests)):
            shown = _draw(rng, seed_tasks, result.kept, config, asked)
            if shown is None:
                break
            batch.append(instruction(shown, config.per_request))
        if not batch:
            result.stop_reason = "no-new-requests"
            break
        keys = [key(messages) for messages in batch]
        if any(k not in answered for k in keys):
            path = result.run_dir / "rounds" / result.run_id / f"{round_no:05d}.jsonl"  # kept: the ledger names it
            path.parent.mkdir(parents=True, exist_ok=True)
            records = ({"id": f"r{round_no:05d}-{i:03d}", "messages": m} for i, m in enumerate(batch))
            path.write_text("".join(canonical_json(r) + "\n" for r in records), encoding="utf-8")
            run = await ask(path)
            result.collect_runs.append(run.run_id)
            result.sent += run.sent
            if run.failed and not run.ok and not answered.keys() & set(keys):
                reason, count = next(iter(run.failures.items()))
                raise StillhouseError(
                    f"every request of the round failed ({count} of {run.failed}: {reason}); "
                    "nothing was kept, fix the cause (e.g. --max-tokens, --temperature) and re-run"
                )
            if run.stop_reason != "done":  # a cap of collect's: judge what came back, then stop
                result.stop_reason = run.stop_reason
            answered.update((e.key, e) for e in store.exchanges("ok", run_id=run.run_id))
        result.requests += len(batch)
        for k in keys:
            exchange = answered.get(k)
            if exchange is None:
                totals["failed"] += 1
                continue
            totals["succeeded"] += 1
            totals["prompt_tokens"] += exchange.prompt_tokens
            totals["completion_tokens"] += exchange.completion_tokens
            totals["cost"] += exchange.cost  # type: ignore[assignment]  # USD: the one float among the counts
            _judge_answer(exchange, kept, config, result.kept, rejected)
    result.rejected, result.totals = dict(rejected), dict(totals)


def _judge(task: str, kept: KeptTasks, config: SynthConfig) -> str | None:
    """Why a candidate is rejected, or None to keep it."""
    words = task.split()
    if len(words) < config.min_words:
        return "too_short"
    if len(words) > config.max_words:
        return "too_long"
    if not task[0].isalnum():
        return "not_a_task"
    return "similar" if kept.too_similar(rouge_tokens(task)) else None


def _draw(
    rng: random.Random, seed_tasks: list[str], new: list[str], config: SynthConfig, asked: set[tuple[str, ...]]
) -> list[str] | None:
    """Tasks to show in one request, unlike every request before it: a repeat would only get its stored answer."""
    for _ in range(_DRAWS):
        shown = rng.sample(seed_tasks, min(config.shown_seeds, len(seed_tasks)))
        shown += rng.sample(new, min(config.shown_kept, len(new)))
        if tuple(shown) not in asked:
            asked.add(tuple(shown))
            return shown
    return None


def _judge_answer(
    exchange: Exchange, kept: KeptTasks, config: SynthConfig, new: list[str], rejected: Counter[str]
) -> None:
    """Keep the answer's new tasks (appending them to `new`) up to the target; count why others were not."""
    choice = (exchange.choices or [{}])[0]
    tasks = parse_tasks(exchange.texts()[0] if exchange.texts() else "")
    if choice.get("finish_reason") == "length" and tasks:
        tasks.pop()  # the last item was cut off mid-sentence
        rejected["truncated"] += 1
    for task in tasks:
        if len(new) >= config.target:
            break
        reason = _judge(task, kept, config)
        if reason:
            rejected[reason] += 1
        else:
            kept.add(task)
            new.append(task)
