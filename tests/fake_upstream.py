"""A scripted OpenAI-compatible upstream on 127.0.0.1 (port 0) for fault injection in collect tests.

It runs an aiohttp server in its own thread, records every request (arrival time, idempotency key,
status sent) and answers what a test's `script` says: a status with headers, a delay, garbage, a
truncated body or a dropped connection. Answers echo the prompt ("<prompt> => ok") so a test can
check each stored answer belongs to its own prompt. Below it: the helpers the collect tests share
(a prompts file, `run` for the Python API with test defaults, `cli` for the real console script).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from stillhouse import CollectResult, collect
from stillhouse.collect.store import request_key


@dataclass
class Call:
    key: str
    prompt: str
    attempt: int  # 1 for the first request with this key
    body: dict[str, Any]
    headers: dict[str, str]
    t: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival
    status: int = 0
    sent_at: float = 0.0  # time.monotonic() when the answer was sent


@dataclass
class Reply:
    status: int = 200
    json: Any = None  # body for non-200 (default: an OpenAI-style error)
    raw: bytes | None = None  # exact bytes instead (garbage)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    mode: str = "normal"  # "drop": close the connection; "truncate": promise more bytes than sent


Script = Callable[[Call], Reply | None]


class Upstream:
    """`with Upstream(script) as up: collect(..., base_url=up.base_url)`; then read up.calls / up.counts."""

    def __init__(self, script: Script | None = None, latency: float = 0.0, completion_tokens: int = 5):
        self.script, self.latency, self.completion_tokens = script, latency, completion_tokens
        self.calls: list[Call] = []
        self.counts: Counter[str] = Counter()
        self.base_url = ""
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def key(self, body: dict[str, Any], sample: int = 0) -> str:
        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        return request_key(self.base_url, body["model"], body["messages"], params, sample)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.counts.clear()

    def __enter__(self) -> Upstream:
        threading.Thread(target=self._serve, daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "teacher-1", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = self.key(body)
        with self._lock:
            self.counts[key] += 1
            call = Call(
                key, _prompt(body), self.counts[key], body, dict(request.headers), time.monotonic(), time.time()
            )
            self.calls.append(call)
        reply = (self.script(call) if self.script else None) or Reply()
        delay = reply.delay or self.latency
        if delay:
            await asyncio.sleep(delay)
        call.status, call.sent_at = reply.status, time.monotonic()
        if reply.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never reaches the client
        if reply.mode == "truncate":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 4000
            await resp.prepare(request)
            await resp.write(b'{"id": "x", "choices": [{"message"')
            assert request.transport is not None
            request.transport.close()
            return resp
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.status != 200:
            err = reply.json or {"error": {"message": f"scripted {reply.status}", "type": "test"}}
            return web.json_response(err, status=reply.status, headers=reply.headers)
        return web.json_response(self.answer(body, call.prompt), headers=reply.headers)

    def answer(self, body: dict[str, Any], prompt: str) -> dict[str, Any]:
        n = body.get("n") or 1
        text = f"{prompt} => ok"
        choices = []
        for i in range(n):
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text}}
            choice["finish_reason"] = "stop"
            if body.get("logprobs"):
                k = body.get("top_logprobs") or 0
                tokens = text.split()
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.1 * (j + 1),
                            "bytes": list(t.encode()),
                            "top_logprobs": [{"token": f"{t}{r}", "logprob": -0.1 * (j + 1) - r} for r in range(k)],
                        }
                        for j, t in enumerate(tokens)
                    ]
                }
            choices.append(choice)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "system_fingerprint": "fp_test",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": self.completion_tokens * n,
                "total_tokens": prompt_tokens + self.completion_tokens * n,
            },
        }


def _prompt(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else str(content)


# -- helpers the collect tests share --------------------------------------------------------------

MODEL = "teacher-1"


def write_prompts(path: Path, n: int, start: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(start, start + n):
            if i % 2:
                f.write(json.dumps({"id": f"p{i}", "prompt": f"what is {i} + 1?", "skill": "add", "answer": i + 1}))
            else:
                msgs = [{"role": "user", "content": f"reverse the word w{i}"}]
                f.write(json.dumps({"id": f"p{i}", "messages": msgs, "skill": "reverse"}))
            f.write("\n")
    return path


def run(prompts: Path, up: Upstream, out: Path, **kw: Any) -> CollectResult:
    kw = {"purpose": "distillation", "api_key_env": None, "concurrency": 8, "backoff_s": 0.02, **kw}
    return collect(prompts, base_url=up.base_url, model=MODEL, out=out, **kw)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess (so error lines and exit codes are what users see)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    base = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )
