"""Collection: send every prompt to an OpenAI-compatible teacher once, keep every answer.

Shape of a run: a streaming reader admits requests (budget caps) into a queue holding at most 2C
fresh ones; C worker tasks send one request at a time. A request to retry gives up its worker and,
once due, is served before the queue: a 429 never holds back the others, and a retry that has waited
its Retry-After never waits behind the queue as well. Memory is bounded by C and the retry backlog,
whatever the number of prompts. A writer thread commits answers
to the run's SQLite store every few ms. Every request has an idempotency key and the reader skips
keys the store already answered, so re-running a killed command sends exactly what was not
committed. The engine reports progress through a callback and knows nothing of terminals (see
stillhouse.cli.progress for that).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import Field

from stillhouse.collect import prompts as prompt_files
from stillhouse.collect.store import STORE_FILE, RequestKeys, RunStore
from stillhouse.core import aio
from stillhouse.core.client import (
    Client,
    api_key,
    check_base_url,
    error_message,
    host_of,
    parse_completion,
    public_url,
    retryable,
)
from stillhouse.core.config import Config
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json, new_run_id, now
from stillhouse.core.pricing import Price, load_prices, price_for
from stillhouse.core.ratelimit import Limiter, backoff
from stillhouse.provenance import terms as terms_mod
from stillhouse.provenance.ledger import Ledger, check_ledger_path, ledger_path, stage_run
from stillhouse.provenance.terms import Purpose

_FEED_CHUNK = 8  # prompts read and checked against the store at a time; the reader yields after each batch
_WRITE_EVERY_S = 0.005  # the writer commits what arrived every 5 ms
_GIVE_UP_AFTER = 20  # failures with no answer at all yet: the endpoint rejects everything
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Progress:
    """Counters of a run in progress; every figure covers this invocation only, except `skipped`."""

    planned: int = 0  # requests the prompts ask for (prompts x samples)
    skipped: int = 0  # already answered in the store (or repeated in the file): not sent
    sent: int = 0  # requests admitted under the caps (a retried request counts once)
    ok: int = 0
    failed: int = 0
    retries: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    elapsed_s: float = 0.0
    paused_s: float = 0.0  # how long the shared gate still holds every request back

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def rate(self) -> float:
        """Finished requests per second."""
        return self.done / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def eta_s(self) -> float | None:
        left = self.planned - self.skipped - self.done
        return left / self.rate if self.rate and left >= 0 else None


@dataclass
class CollectResult(Progress):
    """What a finished (or stopped) collection did. `stop_reason`: done, max-requests, max-tokens-total, max-cost."""

    run_id: str = ""
    run_dir: Path = field(default_factory=Path)
    stop_reason: str = "done"
    system_fingerprints: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # requests that failed for good, by reason


class CollectConfig(Config):
    """How a collection samples, paces, retries and stops; every field is also a `collect` option."""

    system: str | None = Field(default=None, description="System prompt for records without one.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(default=None, ge=1, description="Completion tokens per request.")
    n: int | None = Field(default=None, ge=1, le=128, description="Choices per request.")
    seed: int | None = Field(default=None, description="Sampling seed sent with each request.")
    stop: list[str] | None = Field(default=None, description="Stop sequence (repeatable).")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="Keep the top-K logprobs of every token.")
    params: dict[str, Any] = Field(default={}, description="Other request parameters, sent as they are.")
    samples: int = Field(default=1, ge=1, description="Independent requests per prompt.")
    concurrency: int = Field(default=64, ge=1, le=4096, description="Requests in flight at most.")
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute at most.")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute at most (estimated, reconciled).")
    max_requests: int | None = Field(default=None, ge=1, description="Stop after this many requests (run total).")
    max_tokens_total: int | None = Field(default=None, ge=1, description="Stop at this many tokens (run total).")
    max_cost: float | None = Field(default=None, gt=0, description="Stop at this spend in USD (run total).")
    prices: Path | None = Field(default=None, description="Extra model prices, JSON/TOML: {model: {input, output}}.")
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Seconds per request before it is retried.",
        json_schema_extra={"flag": "timeout"},
    )
    max_retries: int = Field(default=6, ge=0, le=100, description="Retries per request (5xx, 429, timeouts).")
    backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="First back-off step, when the server names no wait.",
        json_schema_extra={"flag": "backoff"},
    )

    def sampling(self) -> dict[str, Any]:
        """The request's sampling parameters (part of every idempotency key)."""
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.n,
            "seed": self.seed,
            "stop": self.stop,
            **({"logprobs": True, "top_logprobs": self.top_logprobs} if self.top_logprobs is not None else {}),
            **self.params,
        }
        return {k: v for k, v in values.items() if v is not None}


async def acollect(
    prompts: str | Path,
    *,
    base_url: str,
    model: str,
    out: str | Path,
    purpose: Purpose | str,
    terms: str | None = None,
    permission: str | None = None,
    ledger: str | Path | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    config: CollectConfig | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 0.5,
    **settings: Any,
) -> CollectResult:
    """Send each prompt (x `samples`) to `base_url`/chat/completions once and commit the answers to `out`.

    `config` (or its fields as keywords, `settings`) sets sampling, pacing, retries and caps. Sampling
    parameters go into the request and its idempotency key. Caps (`max_requests`, `max_tokens_total`,
    `max_cost` in USD) count what the run directory spent before too, so re-running a command never
    spends its budget twice; when one is reached, in-flight requests finish and nothing new is sent.
    Raises StillhouseError, before anything is sent or created, on bad prompts, forbidden terms, a bad
    URL, a missing key or price, an unreachable endpoint; during the run on 401/403/404 or an
    unwritable store, leaving the store consistent for a re-run.
    """
    if config is None:
        config = CollectConfig(**settings)
    elif settings:
        raise StillhouseError("pass either `config` or its fields as keywords, not both")
    purpose = _purpose(purpose)
    base_url = check_base_url(base_url)
    if not model.strip():
        raise StillhouseError("--model is empty; name the teacher model served at --base-url")
    found_terms = terms_mod.check(base_url, terms, purpose, permission)
    key = api_key(api_key_env, base_url)
    price = price_for(model, load_prices(config.prices))
    if config.max_cost is not None and price is None:
        raise StillhouseError(
            f"--max-cost needs a price for model '{model}'; give one with --prices FILE "
            f'(JSON or TOML: {{"{model}": {{"input": USD per 1M tokens, "output": USD per 1M tokens}}}})'
        )
    sampling = config.sampling()
    planned = prompt_files.validate(prompts) * config.samples  # fails on a bad record before anything is sent
    if planned == 0:
        raise StillhouseError(f"{prompts} holds no prompts; nothing to collect")
    led_path = check_ledger_path(ledger_path(out, ledger))
    run = _Run(
        prompts=Path(prompts),
        base_url=base_url,
        model=model,
        run_dir=Path(out),
        api_key=key,
        config=config,
        sampling=sampling,
        limiter=Limiter(config.rpm, config.tpm),
        caps=_Caps(config.max_requests, config.max_tokens_total, config.max_cost),
        price=price,
        on_progress=on_progress,
        progress_every_s=progress_every_s,
    )
    run.stats.planned = planned
    recorded = config.model_dump(mode="json", exclude={"params"})
    recorded |= {
        "prompts": str(Path(prompts).resolve()),
        "base_url": public_url(base_url),
        "model": model,
        "sampling": sampling,
        "price_per_1m": None if price is None else {"input": price.input, "output": price.output},
        "api_key_env": api_key_env if key else None,
        "store": str((Path(out) / STORE_FILE).resolve()),
    }
    teacher = {"host": host_of(base_url), "model": model, "base_url": public_url(base_url)}
    start = {
        "teacher": teacher,
        "terms": terms or (found_terms.id if found_terms else None),
        "terms_clause": found_terms.clause if found_terms else None,
        "purpose": str(purpose),
        "permission": permission,
        "config": recorded,
    }
    await run.execute(lambda: _open_record(run, led_path, start, teacher))
    return run.result()


def _open_record(
    run: _Run, path: Path, start: dict[str, Any], teacher: dict[str, Any]
) -> Callable[[BaseException | None], None]:
    """Write collect.start once the endpoint answered; returns what writes collect.end."""
    led = Ledger(path)
    cm = stage_run(led, "collect", start, run.run_id)
    record = cm.__enter__()

    def finish(error: BaseException | None) -> None:
        s, fps = run.stats, sorted(run.fingerprints)
        record.end.update(
            {
                "teacher": {**teacher, "fingerprints": fps},
                "succeeded": s.ok,
                "failed": s.failed,
                "failures": dict(run.failures),
                "skipped": s.skipped,
                "sent": s.sent,
                "retries": s.retries,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "cost": round(s.cost, 6),
                "priced": run.price is not None,
                "system_fingerprints": fps,
                "stop_reason": run.stop_reason,
                "elapsed_s": round(s.elapsed_s, 3),
            }
        )
        try:
            cm.__exit__(type(error), error, None) if error else cm.__exit__(None, None, None)
        finally:
            led.close()

    return finish


def _blocking(run: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """`run` for callers without an event loop, with its signature (for help() and type checkers)."""

    def collect(*args: P.args, **kwargs: P.kwargs) -> R:
        return aio.run(run(*args, **kwargs))

    return functools.update_wrapper(collect, run, assigned=("__module__", "__doc__"))


collect = _blocking(acollect)


@dataclass
class _Caps:
    requests: int | None
    tokens: int | None
    cost: float | None


class _Request:
    __slots__ = ("attempt", "body", "completion", "key", "meta", "prompt_id", "sample", "tokens")

    def __init__(self, key: str, prompt_id: str, sample: int, body: bytes, tokens: int, meta: str | None):
        self.key, self.prompt_id, self.sample, self.body, self.meta = key, prompt_id, sample, body, meta
        self.tokens = tokens  # estimated prompt tokens
        self.completion = 0  # estimated completion tokens, set when admitted
        self.attempt = 0


_WAKE = _Request("", "", 0, b"", 0, None)  # a queue item that only wakes a worker to look at due retries


class _Run:
    """One invocation: reader -> bounded queue -> C workers -> writer thread."""

    def __init__(
        self,
        *,
        prompts: Path,
        base_url: str,
        model: str,
        run_dir: Path,
        api_key: str | None,
        config: CollectConfig,
        sampling: dict[str, Any],
        limiter: Limiter,
        caps: _Caps,
        price: Price | None,
        on_progress: Callable[[Progress], None] | None,
        progress_every_s: float,
    ):
        self.prompts, self.base_url, self.model, self.run_dir = prompts, base_url, model, run_dir
        self.api_key, self.config, self.sampling = api_key, config, sampling
        self.system, self.samples, self.concurrency = config.system, config.samples, config.concurrency
        self.limiter, self.caps, self.price = limiter, caps, price
        self.max_retries, self.backoff_s = config.max_retries, config.backoff_s
        self.on_progress, self.progress_every_s = on_progress, progress_every_s
        self._keys = RequestKeys(self.base_url, model, sampling)
        self._body_head = f'{{"model":{canonical_json(model)},"messages":'  # the body: model, messages, sampling
        self._body_tail = f",{canonical_json(sampling)[1:-1]}}}" if sampling else "}"
        self.run_id = new_run_id("collect")
        self.stats = Progress()
        self.fingerprints: set[str] = set()
        self.failures: collections.Counter[str] = collections.Counter()  # final failures, by reason
        self.stop_reason = "done"
        self.fatal: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[str] = set()  # keys queued or in flight, until their row is committed
        self._inflight_n = 0  # admitted requests not yet settled, and their estimated tokens:
        self._inflight_prompt = 0
        self._inflight_completion = 0.0
        self._settled = asyncio.Event()  # set whenever an in-flight request finishes
        self._avg_completion = float(_max_tokens(sampling) or 256)  # then the running mean of answers
        self._t0 = 0.0

    # -- the run -------------------------------------------------------------------------------

    async def execute(self, open_record: Callable[[], Callable[[BaseException | None], None]]) -> None:
        """Reach the endpoint, then create the store and the ledger's start entry, and run to the end."""
        client = Client(
            self.base_url,
            self.api_key,
            concurrency=self.concurrency,
            timeout_s=self.config.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
        )
        finish: Callable[[BaseException | None], None] | None = None
        store: RunStore | None = None
        try:
            async with client:
                self._client = client
                await client.preflight()  # nothing is created for an endpoint that does not answer
                store = self.store = RunStore(self.run_dir)
                self.prior = store.counts()  # what earlier invocations spent: the caps count it too
                finish = open_record()
                self._writer = _Writer(store.run_dir, asyncio.get_running_loop(), self._abort)
                self._writer.start()
                self._t0 = time.monotonic()
                try:
                    await self._run_tasks()
                finally:
                    self._writer.close()
                    self.stats.elapsed_s = time.monotonic() - self._t0
                    self.fatal = self.fatal or self._writer.error  # a failure of the last commit too
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError | KeyboardInterrupt):
                self.stop_reason = "interrupted"
            if finish is not None:
                finish(e)
            raise
        finally:
            if store is not None:
                store.close()
        if self.fatal is not None:
            self.stop_reason = f"error: {self.fatal}" if isinstance(self.fatal, StillhouseError) else "error"
            if finish is not None:
                finish(self.fatal)
            raise self.fatal
        if finish is not None:
            finish(None)

    async def _run_tasks(self) -> None:
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()  # admitted requests (None: stop)
        self._due: collections.deque[_Request] = collections.deque()  # retries whose wait is over: served first
        self._room = asyncio.Semaphore(2 * self.concurrency)  # fresh requests waiting in the queue, at most
        self._tasks = [asyncio.create_task(self._guard(self._feed()))]
        self._tasks += [asyncio.create_task(self._guard(self._work())) for _ in range(self.concurrency)]
        ticker = asyncio.create_task(self._tick()) if self.on_progress else None
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            if ticker:
                ticker.cancel()
            for t in self._tasks:
                t.cancel()
        if self.on_progress and self.fatal is None:  # a fatal error is reported as its one line
            self.on_progress(self.snapshot())

    async def _guard(self, coro: Any) -> None:
        """A bug in one task stops the whole run instead of leaving the others to finish without it."""
        try:
            await coro
        except Exception as e:
            self._abort(e)
            raise

    def _abort(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
        for t in self._tasks:
            t.cancel()

    async def _tick(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(self.progress_every_s)
            self.on_progress(self.snapshot())

    def snapshot(self) -> Progress:
        s = self.stats
        s.elapsed_s = time.monotonic() - self._t0
        s.paused_s = max(0.0, self.limiter.gate - time.monotonic())
        return Progress(**s.__dict__)

    def result(self) -> CollectResult:
        return CollectResult(
            **self.stats.__dict__,
            run_id=self.run_id,
            run_dir=self.run_dir,
            stop_reason=self.stop_reason,
            system_fingerprints=sorted(self.fingerprints),
            failures=dict(self.failures.most_common()),
        )

    # -- reader ----------------------------------------------------------------------------------

    async def _feed(self) -> None:
        # Small batches, each followed by a yield: reading and keying prompts never holds the loop
        # for long, and the first round goes out as a ramp rather than one burst (a burst comes
        # back as one, and every answer in it waits for those before it, round after round).
        chunk: list[_Request] = []
        for p in prompt_files.read_prompts(self.prompts):
            if self.stop_reason != "done":
                break
            chunk.extend(self._requests(p))
            if len(chunk) >= _FEED_CHUNK:
                await self._enqueue(chunk)
                chunk = []
                await asyncio.sleep(0)  # let the workers send what is queued before reading on
        if chunk and self.stop_reason == "done":
            await self._enqueue(chunk)
        while self._inflight_n:  # retries may still be due: the workers stay until all have settled
            await self._wait_settled()
        for _ in range(self.concurrency):
            self._queue.put_nowait(None)

    def _requests(self, p: prompt_files.Prompt) -> Iterable[_Request]:
        messages = p.messages
        if self.system is not None and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system}, *messages]
        messages_json = canonical_json(messages)  # one serialisation for the body and the keys
        body = f"{self._body_head}{messages_json}{self._body_tail}".encode()
        chars = sum(len(m["content"]) if isinstance(m["content"], str) else len(json.dumps(m)) for m in messages)
        meta = json.dumps(p.meta, ensure_ascii=False, separators=(",", ":"), default=str) if p.meta else None
        for s in range(self.samples):
            yield _Request(self._keys.key(messages_json, s), p.id, s, body, chars // 4 + 1, meta)

    async def _enqueue(self, chunk: list[_Request]) -> None:
        while self._writer.committed:
            self._pending.discard(self._writer.committed.popleft())
        answered = self.store.committed([r.key for r in chunk])
        for r in chunk:
            if r.key in answered or r.key in self._pending:
                self.stats.skipped += 1
            elif await self._admit(r):
                self._pending.add(r.key)
                await self._room.acquire()
                self._queue.put_nowait(r)
            else:
                return

    # -- budget ----------------------------------------------------------------------------------

    async def _admit(self, req: _Request) -> bool:
        """Admit a request only while the caps have room for it on top of those admitted before.

        Estimates can be pessimistic (no answer seen yet), so a request that does not fit waits for
        admitted ones to settle and looks again; the cap is reached when nothing is in flight and
        what was spent leaves no room. Only the reader admits, so no worker ever waits here.
        """
        while self.stop_reason == "done":
            reason = self._over_cap(req)
            if reason is None:
                self.stats.sent += 1
                req.completion = round(self._avg_completion)
                self._inflight_n += 1
                self._inflight_prompt += req.tokens
                self._inflight_completion += req.completion
                return True
            if not self._inflight_n:
                self.stop_reason = reason
                break
            await self._wait_settled()
        return False

    async def _wait_settled(self) -> None:
        self._settled.clear()
        await self._settled.wait()

    def _settle(self, req: _Request) -> None:
        """The request has its final answer (or failure): it no longer counts as in flight."""
        self._inflight_n -= 1
        self._inflight_prompt -= req.tokens
        self._inflight_completion -= req.completion
        self._settled.set()

    def _over_cap(self, req: _Request) -> str | None:
        s, caps, prior = self.stats, self.caps, self.prior
        if caps.requests is not None and prior["exchanges"] + s.sent >= caps.requests:
            return "max-requests"
        # with nothing in flight, only what was really spent counts: one request may go past the cap
        idle = not self._inflight_n
        prompt_in = 0 if idle else self._inflight_prompt + req.tokens
        completion_in = 0 if idle else self._inflight_completion + self._avg_completion
        spent = prior["prompt_tokens"] + prior["completion_tokens"] + s.prompt_tokens + s.completion_tokens
        if caps.tokens is not None and spent + prompt_in + completion_in >= caps.tokens:
            return "max-tokens-total"
        cost = prior["cost"] + s.cost + (self.price.cost(prompt_in, round(completion_in)) if self.price else 0.0)
        if caps.cost is not None and cost >= caps.cost:
            return "max-cost"
        return None

    # -- workers ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        while (req := self._due.popleft() if self._due else await self._queue.get()) is not None:
            if req is _WAKE:
                continue
            if req.attempt == 0:
                self._room.release()
            await self._attempt(req)

    async def _attempt(self, req: _Request) -> None:
        """Send once. A retry is scheduled back into the queue when due, so its worker moves on."""
        s = self.stats
        expected = req.tokens + req.completion
        await self.limiter.wait(expected)
        if self.fatal is not None:  # cancellation lands only at the next suspension: not past here
            return
        s.in_flight += 1
        reply = await self._client.post(req.body)
        s.in_flight -= 1
        status, raw, retry_at = reply.status, reply.raw, None
        if not status:
            error = reply.error
        else:
            retry_at = self.limiter.observe(status, reply.headers, expected)
            if status == 200:
                data = parse_completion(raw)
                if data is not None:
                    self._record_ok(req, raw, data, expected)
                    return
                error = f"malformed answer: {raw[:200].decode(errors='replace')!r}"
            else:
                error = f"HTTP {status}: {error_message(raw)}"
        if status in (401, 403, 404):
            self._abort(StillhouseError(self._fatal_line(status, raw)))
            return
        self.limiter.reconcile(expected, 0)
        if not (status == 200 or retryable(status)) or req.attempt >= self.max_retries:
            self._record_failed(req, self._client.redact(error))
            return
        delay = backoff(req.attempt, self.backoff_s) if retry_at is None else retry_at - time.monotonic()
        req.attempt += 1
        s.retries += 1
        asyncio.get_running_loop().call_later(max(0.0, delay), self._retry_due, req)

    def _retry_due(self, req: _Request) -> None:
        """Its wait is over: next in line. Every worker looks at `_due` before the queue; the token
        wakes one if all of them are waiting on an empty queue."""
        self._due.append(req)
        self._queue.put_nowait(_WAKE)

    def _record_ok(self, req: _Request, raw: bytes, data: dict[str, Any], expected: int) -> None:
        s = self.stats
        usage = data.get("usage") or {}
        pt = usage.get("prompt_tokens")
        ct = usage.get("completion_tokens")
        if pt is None or ct is None:  # some servers omit usage: estimate it so caps still hold
            texts = [(c.get("message") or {}).get("content") or "" for c in data["choices"]]
            pt, ct = req.tokens, sum(len(t) for t in texts) // 4
        cost = self.price.cost(pt, ct) if self.price else 0.0
        fingerprint = data.get("system_fingerprint")
        if fingerprint:
            self.fingerprints.add(fingerprint)
        self.limiter.reconcile(expected, pt + ct)
        s.ok += 1
        s.prompt_tokens += pt
        s.completion_tokens += ct
        s.cost += cost
        self._avg_completion += (ct - self._avg_completion) / min(s.ok, 100)
        row = (req.key, req.prompt_id, req.sample, req.body.decode(), raw.decode(), "ok", None)
        self._writer.put((*row, pt, ct, cost, req.attempt + 1, fingerprint, self.run_id, now(), req.meta))
        self._settle(req)

    def _record_failed(self, req: _Request, error: str) -> None:
        s = self.stats
        s.failed += 1
        self.failures[error[:200]] += 1
        row = (req.key, req.prompt_id, req.sample, req.body.decode(), None, "error", error)
        self._writer.put((*row, 0, 0, 0.0, req.attempt + 1, None, self.run_id, now(), req.meta))
        self._settle(req)
        if s.ok == 0 and s.failed >= _GIVE_UP_AFTER:
            self._abort(StillhouseError(f"{s.failed} requests failed and none succeeded; last: {error}"))

    def _fatal_line(self, status: int, raw: bytes) -> str:
        msg = self._client.redact(error_message(raw))
        url = public_url(str(self._client.chat_url))
        if status == 404:
            return f"HTTP 404 from {url}: {msg} (is '{self.model}' served there, and does --base-url end in /v1?)"
        return f"HTTP {status} from {url}: {msg} (check the API key; the run stopped, re-run to resume)"


class _Writer(threading.Thread):
    """Commits rows to the store every few ms, off the event loop, so a slow disk never stalls it.

    Rows go into a deque (an append neither locks nor wakes a thread); the writer drains it on a
    timer, so a busy run pays for one transaction per tick, not per answer.
    """

    def __init__(self, run_dir: Path, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException], None]):
        super().__init__(name="stillhouse-store-writer", daemon=True)
        self.rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self.put = self.rows.append
        self.committed: collections.deque[str] = collections.deque()  # keys, for the reader's bookkeeping
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._run_dir, self._loop, self._on_error = run_dir, loop, on_error

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing.set()
        self.join()

    def run(self) -> None:
        try:
            with RunStore(self._run_dir) as store:  # sqlite connections belong to the thread that opens them
                while True:
                    closing = self._closing.wait(_WRITE_EVERY_S)
                    rows = [self.rows.popleft() for _ in range(len(self.rows))]
                    if rows:
                        store.put_rows(rows)
                        self.committed.extend(r[0] for r in rows)
                    if closing and not self.rows:
                        return
        except Exception as e:  # reported on the event loop, which stops the run and raises it
            self.error = e
            self._loop.call_soon_threadsafe(self._on_error, e)


def _max_tokens(sampling: dict[str, Any]) -> int | None:
    """The completion budget per request the sampling parameters set, if any (times n choices)."""
    mt = sampling.get("max_tokens") or sampling.get("max_completion_tokens")
    return mt * (sampling.get("n") or 1) if mt else None


def _purpose(value: Purpose | str) -> Purpose:
    try:
        return Purpose(value)
    except ValueError:
        raise StillhouseError(
            f"unknown purpose '{value}'; declare one of: {', '.join(p.value for p in Purpose)}"
        ) from None
