"""`synth`: Self-Instruct-style prompt synthesis from a few seed tasks.

Each request shows the teacher some seed tasks and some it already wrote, and asks for new ones;
a new task is kept only when its ROUGE-L against every kept task (seeds included) stays below 0.7.
Requests go through a run store, so a re-run replays answered requests from it instead of re-sending
them: task sampling is seeded, so the replay rebuilds the same requests and the same kept list.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from stillhouse.errors import StillhouseError
from stillhouse.ledger import Ledger, canonical_json, ledger_path, new_run_id, now, operator
from stillhouse.store import Exchange, RunStore, request_key
from stillhouse.terms import Purpose, check, host_of

SEED_FIELDS = ("prompt", "instruction", "task", "text", "question")
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class SynthConfig:
    target: int = 100  # new tasks wanted
    max_requests: int | None = None  # the budget; by default as many requests as tasks wanted
    per_request: int = 8  # new tasks asked for in each request
    shown_seeds: int = 6  # seed tasks shown in each request
    shown_kept: int = 2  # already-kept synthetic tasks shown in each request
    max_rouge: float = 0.7  # keep a task only when ROUGE-L against every kept task is below this
    min_words: int = 3
    max_words: int = 150
    temperature: float = 1.0
    max_tokens: int = 512
    concurrency: int = 8
    seed: int = 0


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


# --- asking the teacher: the one seam to the collection engine -------------------------------------


@dataclass
class Request:
    key: str
    prompt_id: str
    sample: int
    body: dict[str, Any]


def retry_delay(header: str | None, attempt: int) -> float:
    """Retry-After (seconds or an HTTP date) when the server sends it, else exponential back-off."""
    if header:
        try:
            return min(300.0, max(0.0, float(header)))
        except ValueError:
            try:
                return min(300.0, max(0.0, (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()))
            except (TypeError, ValueError):
                pass
    return min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


async def ask(
    requests: Sequence[Request],
    store: RunStore,
    *,
    base_url: str,
    run_id: str,
    api_key: str | None,
    concurrency: int,
    max_attempts: int = 6,
) -> list[Exchange]:
    """Send requests to an OpenAI-compatible endpoint, commit each exchange as it completes, return them.

    This is the step to hand to the collection engine (stillhouse.collect) once it is merged: it
    takes requests keyed by `request_key` and must leave, and return, one exchange per request.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, req: Request) -> Exchange:
        error, attempt = "", 0
        async with gate:
            while attempt < max_attempts:
                attempt += 1
                try:
                    async with session.post(url, json=req.body) as resp:
                        if resp.status == 200:
                            data = await resp.json(content_type=None)
                            exchange = _exchange(req, run_id, "ok", data, None, attempt, data.get("usage") or {})
                            store.put_many([exchange])
                            return exchange
                        error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                        if resp.status not in RETRY_STATUSES:
                            break
                        delay = retry_delay(resp.headers.get("Retry-After"), attempt)
                except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as e:
                    error, delay = f"{type(e).__name__}: {e}", retry_delay(None, attempt)
                if attempt < max_attempts:
                    await asyncio.sleep(delay)
        exchange = _exchange(req, run_id, "error", None, error, attempt, {})
        store.put_many([exchange])
        return exchange

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session, r) for r in requests)))


def _exchange(
    req: Request, run_id: str, status: str, data: Any, error: str | None, attempts: int, usage: dict
) -> Exchange:
    return Exchange(
        key=req.key,
        prompt_id=req.prompt_id,
        sample=req.sample,
        request=req.body,
        status=status,
        run_id=run_id,
        at=now(),
        response=data,
        error=error,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        attempts=attempts,
        fingerprint=(data or {}).get("system_fingerprint"),
    )


# --- the synthesis loop ----------------------------------------------------------------------------


@dataclass
class SynthResult:
    out: Path
    run_dir: Path
    run_id: str
    kept: list[str]
    requests: int  # requests the synthesis used, answered now or replayed from the store
    sent: int  # requests sent to the teacher by this invocation
    rejected: dict[str, int]


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
) -> SynthResult:
    """Synthesise new prompts from seed tasks until `target` are kept or `max_requests` are used.

    Writes PROMPTS.jsonl (id, prompt) atomically; exchanges go to run_dir (default: next to the
    output, `<name>.synth/`), so re-running the same command resumes without re-sending anything.
    """
    config = config or SynthConfig()
    if not 0 < config.max_rouge <= 1 or config.target < 1 or config.per_request < 1 or config.concurrency < 1:
        raise StillhouseError("target, per-request and concurrency must be positive, and max ROUGE-L in (0, 1]")
    seeds_path, out = Path(seeds), Path(out)
    seed_tasks = read_seeds(seeds_path)
    governing = check(base_url, terms, purpose, permission)
    run_dir = Path(run_dir) if run_dir else out.with_name(out.stem + ".synth")
    budget = config.max_requests if config.max_requests is not None else config.target
    api_key = os.environ.get(api_key_env) if api_key_env else None

    run_id = new_run_id("synth")
    with RunStore(run_dir) as store, Ledger(ledger_path(run_dir, ledger)) as led:
        led.append(
            run_id,
            "synth.start",
            {
                "teacher": {"host": host_of(base_url), "model": model, "base_url": base_url},
                "terms": governing.id if governing else terms,
                "purpose": str(purpose),
                "permission": permission,
                "operator": operator(),
                "config": asdict(config),
                "inputs": {"seeds": str(seeds_path), "sha256": hashlib.sha256(seeds_path.read_bytes()).hexdigest()},
            },
        )
        try:
            result = asyncio.run(_loop(seed_tasks, config, budget, store, base_url, model, run_id, api_key))
        except BaseException as e:
            led.append(run_id, "synth.end", {"error": str(e) or type(e).__name__})
            raise
        kept, used, sent, rejected, totals = result
        tmp = out.with_name(f".{out.name}.tmp-{run_id}")
        lines = (
            canonical_json({"id": f"synth-{i:06d}", "prompt": t, "origin": run_id}) + "\n" for i, t in enumerate(kept)
        )
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(out)
        led.append(
            run_id,
            "synth.end",
            {
                **totals,
                "kept": len(kept),
                "requests": used,
                "sent": sent,
                "rejected": rejected,
                "outputs": {"path": str(out), "sha256": hashlib.sha256(out.read_bytes()).hexdigest()},
            },
        )
    return SynthResult(out, run_dir, run_id, kept, used, sent, rejected)


async def _loop(
    seed_tasks: list[str],
    config: SynthConfig,
    budget: int,
    store: RunStore,
    base_url: str,
    model: str,
    run_id: str,
    api_key: str | None,
) -> tuple[list[str], int, int, dict[str, int], dict[str, int]]:
    rng = random.Random(config.seed)
    answered = {e.key: e for e in store.exchanges(status="ok")}
    kept = KeptTasks(config.max_rouge)
    for task in seed_tasks:
        kept.add(task)
    new: list[str] = []
    rejected: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    used = sent = 0
    params = {"temperature": config.temperature, "max_tokens": config.max_tokens}
    while len(new) < config.target and used < budget:
        batch = []
        for _ in range(min(config.concurrency, budget - used)):
            shown = rng.sample(seed_tasks, min(config.shown_seeds, len(seed_tasks)))
            shown += rng.sample(new, min(config.shown_kept, len(new)))
            messages = instruction(shown, config.per_request)
            key = request_key(base_url, model, messages, params, used)
            batch.append(Request(key, f"synth-{used}", used, {"model": model, "messages": messages, **params}))
            used += 1
        missing = [r for r in batch if r.key not in answered]
        if missing:
            got = await ask(
                missing, store, base_url=base_url, run_id=run_id, api_key=api_key, concurrency=config.concurrency
            )
            sent += len(missing)
            answered.update((e.key, e) for e in got if e.status == "ok")
        for req in batch:
            exchange = answered.get(req.key)
            if exchange is None:
                totals["failed"] += 1
                continue
            totals["ok"] += 1
            totals["prompt_tokens"] += exchange.prompt_tokens
            totals["completion_tokens"] += exchange.completion_tokens
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
    return new, used, sent, dict(rejected), dict(totals)
