"""Evaluate a student against its teacher on held-out prompts: accuracy, agreement, and their spread.

Either side may be a local model directory (generated here with batched greedy decoding) or an
OpenAI-compatible endpoint, so a distilled student can be checked against the API it came from, or
two models compared with each other. Agreement means the same graded answer: world's extractor
when it has one, else exact match of normalised text. The 95 % interval on agreement is Wilson's.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse import embedded
from stillhouse.core import aio
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import new_run_id, operator
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger
from stillhouse.serve.generate import greedy

Chat = list[dict[str, str]]


# ---------------------------------------------------------------- grading


def normalise(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or trailing full stop: formatting is not an answer."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip("\"'` ").rstrip(".!").strip()


@dataclass(frozen=True)
class Grader:
    """How answers are judged: `grade` says whether a reply is right, `extract` gives the answer
    two models are compared on (so "12 + 30 = 42" and "42" agree when the grader reads both as 42)."""

    grade: Callable[[str, str, str], bool]  # (skill, expected, reply) -> right?
    extract: Callable[[str, str | None, str], str]  # (skill, expected or None, reply) -> the graded answer


def exact_grader() -> Grader:
    """For suites with no skill-aware grader: right means the same normalised text as the expected answer."""
    return Grader(
        grade=lambda skill, expected, reply: normalise(reply) == normalise(expected),
        extract=lambda skill, expected, reply: normalise(reply),
    )


def world_grader() -> Grader:
    """stillhouse.embedded.world's graders: agreement compares the answers they extract, not the wording."""
    world = importlib.import_module("stillhouse.embedded.world")
    return Grader(grade=world.grade, extract=lambda skill, expected, reply: world.extract(skill, reply, expected))


def default_grader() -> Grader:
    try:
        return world_grader()
    except ImportError:
        return exact_grader()


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n: sound near 0 and 1 and for small n, unlike k/n ± z·se."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---------------------------------------------------------------- suites


def load_suite(suite: str, n: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """`micro`: world's held-out prompts, `n` per skill; else a JSONL file of {messages, skill, answer}."""
    if suite == "micro":
        try:
            world = importlib.import_module("stillhouse.embedded.world")
        except ImportError as e:
            raise StillhouseError("the micro suite needs stillhouse.embedded.world; pass a JSONL suite") from e
        skills = getattr(world, "SKILLS", None)
        if skills:
            return [r for s in skills for r in world.make_prompts(n, skills=[s], split="heldout", seed=seed)]
        return world.make_prompts(n, split="heldout", seed=seed)
    path = Path(suite)
    if not path.is_file():
        raise StillhouseError(f"suite '{suite}' is neither 'micro' nor a JSONL file")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            messages = rec["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise StillhouseError(f"{path}:{i}: expected a JSON object with 'messages' ({e})") from e
        if messages and messages[-1].get("role") == "assistant":  # a reference answer is not part of the prompt
            messages = messages[:-1]
        records.append({**rec, "messages": messages, "skill": rec.get("skill") or "all"})
    if not records:
        raise StillhouseError(f"{path} holds no prompts")
    return records


# ---------------------------------------------------------------- models


class Responder(Protocol):
    name: str

    def respond(self, chats: Sequence[Chat]) -> list[str]: ...


class LocalModel:
    """A model directory, answered here: batched greedy generation with left padding."""

    def __init__(self, path: str | Path, batch_size: int = 32, max_new_tokens: int = 192):
        self.path, self.name = Path(path), str(path)
        try:
            self.tok = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path).eval()
        except (OSError, ValueError) as e:
            raise StillhouseError(f"cannot load the model in {self.path}: {e}") from e
        if not self.tok.chat_template:
            raise StillhouseError(f"the tokenizer in {self.path} has no chat template; add one to evaluate on chats")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def respond(self, chats: Sequence[Chat]) -> list[str]:
        return greedy(self.model, self.tok, chats, self.max_new_tokens, self.batch_size)


class Endpoint:
    """An OpenAI-compatible chat endpoint, asked at temperature 0 with bounded concurrency."""

    def __init__(
        self, base_url: str, model: str | None = None, concurrency: int = 8, max_tokens: int = 192, retries: int = 4
    ):
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/") + ("/v1" if parts.path in ("", "/") else "")
        self.model, self.concurrency, self.max_tokens, self.retries = model, concurrency, max_tokens, retries
        self.name = f"{self.base_url} {model or ''}".strip()

    def respond(self, chats: Sequence[Chat]) -> list[str]:
        return aio.run(self._respond(chats))

    async def _respond(self, chats: Sequence[Chat]) -> list[str]:
        gate = asyncio.Semaphore(self.concurrency)
        done = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            if not self.model:
                self.model = await self._served_model(session)
                self.name = f"{self.base_url} {self.model}"

            async def one(chat: Chat) -> str:
                nonlocal done
                async with gate:
                    reply = await self._complete(session, chat, done, len(chats))
                done += 1
                return reply

            tasks = [asyncio.create_task(one(c)) for c in chats]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                for t in tasks:
                    t.cancel()

    async def _served_model(self, session: aiohttp.ClientSession) -> str:
        try:
            async with session.get(f"{self.base_url}/models") as r:
                r.raise_for_status()
                return (await r.json())["data"][0]["id"]
        except (aiohttp.ClientError, OSError, KeyError, IndexError, TimeoutError) as e:
            raise StillhouseError(
                f"cannot list the models of {self.base_url} ({e}); is it up? "
                "or pass the model name (--teacher-model / --student-model)"
            ) from e

    async def _complete(self, session: aiohttp.ClientSession, chat: Chat, done: int, total: int) -> str:
        body = {"model": self.model, "messages": chat, "temperature": 0, "max_tokens": self.max_tokens}
        error, wait = "", 0.0
        for attempt in range(self.retries):
            if attempt:  # back off, honouring Retry-After when the server sent one
                await asyncio.sleep(max(wait, 0.25 * 2**attempt))
            try:
                async with session.post(f"{self.base_url}/chat/completions", json=body) as r:
                    if r.status == 200:
                        data = await r.json()
                        return (data["choices"][0]["message"].get("content") or "").strip()
                    error = f"HTTP {r.status}: {(await r.text())[:200]}"
                    if r.status not in (408, 429) and r.status < 500:
                        break
                    wait = float(r.headers.get("Retry-After", 0) or 0)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                error, wait = str(e) or type(e).__name__, 0.0
        raise StillhouseError(
            f"{self.base_url} stopped answering during the eval ({done} of {total} prompts answered): {error}"
        )


def responder(spec: str, model: str | None = None, **kw: Any) -> Responder:
    """A URL is an endpoint; a directory (or 'ember' / 'pebble', the shipped models) is generated locally."""
    if spec.startswith(("http://", "https://")):
        return Endpoint(spec, model, **{k: v for k, v in kw.items() if k == "max_tokens"})
    shipped = {embedded.TEACHER_NAME: embedded.teacher_path, embedded.STUDENT_NAME: embedded.student_path}
    path = shipped[spec]() if spec in shipped else Path(spec)
    if not (path / "config.json").exists():
        raise StillhouseError(f"'{spec}' is neither an http(s) endpoint nor a model directory (no config.json)")
    return LocalModel(path, max_new_tokens=kw.get("max_tokens", 192), batch_size=kw.get("batch_size", 32))


# ---------------------------------------------------------------- scoring


def score(records: Sequence[dict[str, Any]], a: list[str], b: list[str], grader: Grader) -> dict[str, dict[str, Any]]:
    """Per skill (and 'all'): accuracy of a and of b, and how often they give the same graded answer."""
    tallies: dict[str, dict[str, int]] = {}
    for rec, ra, rb in zip(records, a, b, strict=True):
        skill = rec.get("skill") or "all"
        for key in {skill, "all"}:
            t = tallies.setdefault(key, {"n": 0, "graded": 0, "a": 0, "b": 0, "same": 0})
            t["n"] += 1
            expected = None if rec.get("answer") is None else str(rec["answer"])
            t["same"] += grader.extract(skill, expected, ra) == grader.extract(skill, expected, rb)
            if rec.get("answer") is not None:
                t["graded"] += 1
                t["a"] += bool(grader.grade(skill, str(rec["answer"]), ra))
                t["b"] += bool(grader.grade(skill, str(rec["answer"]), rb))
    out = {}
    for key, t in tallies.items():
        graded = t["graded"]
        out[key] = {
            "n": t["n"],
            "a_accuracy": t["a"] / graded if graded else None,
            "b_accuracy": t["b"] / graded if graded else None,
            "agreement": t["same"] / t["n"],
            "agreement_ci95": list(wilson(t["same"], t["n"])),
        }
    return out


def evaluate(
    student: Responder,
    teacher: Responder,
    records: Sequence[dict[str, Any]],
    grader: Grader | None = None,
    *,
    ledger: str | Path | None = None,
    suite: str = "",
) -> dict[str, Any]:
    """Student's accuracy and agreement with the teacher, and the teacher's own accuracy, per skill."""
    return _run({"teacher": teacher, "student": student}, records, grader, ledger, suite, _eval_view)


def compare(
    a: Responder,
    b: Responder,
    records: Sequence[dict[str, Any]],
    grader: Grader | None = None,
    *,
    ledger: str | Path | None = None,
    suite: str = "",
) -> dict[str, Any]:
    """How often two models give the same graded answer on the same prompts, with a 95 % interval."""
    return _run({"a": a, "b": b}, records, grader, ledger, suite, _compare_view)


def _eval_view(names: dict[str, str], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def view(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": s["n"],
            "teacher": {"accuracy": s["a_accuracy"]},
            "student": {
                "accuracy": s["b_accuracy"],
                "agreement": s["agreement"],
                "agreement_ci95": s["agreement_ci95"],
            },
        }

    top = view(scores["all"])
    top["teacher"]["model"], top["student"]["model"] = names["teacher"], names["student"]
    return top | {"per_skill": {k: view(v) for k, v in sorted(scores.items()) if k != "all"}}


def _compare_view(names: dict[str, str], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def view(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": s["n"],
            "agreement": s["agreement"],
            "agreement_ci95": s["agreement_ci95"],
            "a": {"accuracy": s["a_accuracy"]},
            "b": {"accuracy": s["b_accuracy"]},
        }

    top = view(scores["all"])
    top["a"]["model"], top["b"]["model"] = names["a"], names["b"]
    return top | {"per_skill": {k: view(v) for k, v in sorted(scores.items()) if k != "all"}}


def _run(
    sides: dict[str, Responder],
    records: Sequence[dict[str, Any]],
    grader: Grader | None,
    ledger: str | Path | None,
    suite: str,
    view: Callable[[dict[str, str], dict[str, dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Ask both sides every prompt, score, and record the run as eval.start / eval.end."""
    grader = grader or default_grader()
    a, b = sides.values()
    names = {k: {"model": r.name} for k, r in sides.items()}  # the ledger's teacher={model, ...} shape
    with Ledger(ledger or default_ledger(b)) as led:
        run_id = new_run_id("eval")
        led.append(run_id, "eval.start", {"operator": operator(), "suite": suite, "prompts": len(records)} | names)
        try:
            chats = [r["messages"] for r in records]
            replies_a, replies_b = a.respond(chats), b.respond(chats)
            result = view({k: r.name for k, r in sides.items()}, score(records, replies_a, replies_b, grader))
        except BaseException as e:
            led.append(run_id, "eval.end", {"ok": False, "failed": str(e) or type(e).__name__})
            raise
        result["suite"] = suite
        led.append(run_id, "eval.end", {"ok": True, "result": result})
    return result | {"ledger": {"path": str(led.path), "run_id": run_id}}


def default_ledger(student: Responder) -> Path:
    """The ledger a trained student names in its stillhouse.json (its lineage), else ./ledger.sqlite."""
    meta = getattr(student, "path", None)
    if meta is not None and (meta / "stillhouse.json").exists():
        recorded = json.loads((meta / "stillhouse.json").read_text()).get("ledger")
        if recorded:
            return Path(recorded)
    return Path(LEDGER_FILE)
