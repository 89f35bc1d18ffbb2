"""The gateway: an OpenAI-compatible reverse proxy with keys, per-key limits and a request log.

Every request is authenticated by its bearer key (401 when missing, unknown or revoked, logged with the
source address), admitted against the key's rpm/tpm (429 with Retry-After), and forwarded byte for byte
to the upstream under the upstream's own key; the upstream's answer comes back with its status, and a
stream is relayed chunk by chunk as it arrives. What the log and the token limits need (answer text,
token counts) is read from the answer after it has been sent, so the client never waits on that parsing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from stillhouse.core import aio
from stillhouse.core.errors import StillhouseError
from stillhouse.gateway.keys import Key, KeyStore
from stillhouse.gateway.limits import Limits
from stillhouse.gateway.log import RequestLog, Retention

log = logging.getLogger(__name__)

# Not forwarded either way: hop-by-hop headers, and those aiohttp recomputes for the body it sends.
_DROP = frozenset(
    h.lower()
    for h in (
        "Authorization", "Host", "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
        "Proxy-Authorization", "Proxy-Connection", "Content-Length", "Content-Encoding",
    )
)  # fmt: skip
_ENDPOINTS = {"chat/completions": "chat", "completions": "completions"}


def _error(status: int, message: str, code: str, type: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def check_upstream(url: str) -> URL:
    """The upstream's base URL (ending in /v1 or whatever prefix it serves under), checked."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise StillhouseError(f"--upstream must be an http(s) URL such as http://127.0.0.1:8000/v1, not {url!r}")
    return parsed.with_path(parsed.path.rstrip("/"))


def prompt_text(body: dict[str, Any]) -> str | None:
    """The text a request sends: its messages' contents one per line, or its prompt(s)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str):
                parts.append(content)
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    return None


def _answer(payload: bytes, streamed: bool) -> tuple[str | None, int | None, int | None]:
    """Answer text and (prompt, completion) tokens from a JSON answer or an SSE stream; counts may be None."""
    events = []
    if streamed:
        for line in payload.split(b"\n"):
            if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                with suppress(ValueError):
                    events.append(json.loads(line[6:]))
    else:
        with suppress(ValueError):
            events.append(json.loads(payload))
    texts: list[str] = []
    usage: dict[str, Any] = {}
    chunks = 0
    for event in events:
        if not isinstance(event, dict):
            continue
        for choice in event.get("choices") or ():
            piece = (choice.get("message") or choice.get("delta") or {}).get("content") or choice.get("text")
            if piece:
                texts.append(piece)
                chunks += 1
        usage = event.get("usage") or usage
    if not events:
        return None, None, None
    completion = usage.get("completion_tokens", chunks if streamed else None)  # a stream without usage: ~1 per chunk
    return "".join(texts), usage.get("prompt_tokens"), completion


class Gateway:
    """The proxy's state (keys, limits, log, the upstream session) and its route handlers."""

    def __init__(
        self,
        upstream: str,
        keys: KeyStore,
        log: RequestLog,
        *,
        upstream_key: str | None = None,
        trust_forwarded: bool = False,
    ):
        self.upstream = check_upstream(upstream)
        self.keys, self.log, self.limits = keys, log, Limits()
        self.upstream_key, self.trust_forwarded = upstream_key, trust_forwarded
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.add_routes(
            [
                web.get("/v1/models", self.forward),
                web.get("/v1/models/{model}", self.forward),
                web.post("/v1/chat/completions", self.forward),
                web.post("/v1/completions", self.forward),
            ]
        )
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def _source(self, request: web.Request) -> str | None:
        forwarded = request.headers.get("X-Forwarded-For") if self.trust_forwarded else None
        return forwarded.split(",")[0].strip() if forwarded else request.remote

    def _authenticate(self, request: web.Request) -> Key | None:
        header = request.headers.get("Authorization", "")
        return self.keys.lookup(header[7:].strip()) if header[:7].lower() == "bearer " else None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        started, arrived = time.perf_counter(), time.time()
        tail = request.path[len("/v1/") :]
        row: dict[str, Any] = {
            "ts": arrived,
            "source": self._source(request),
            "user_agent": request.headers.get("User-Agent"),
            "endpoint": _ENDPOINTS.get(tail, "models"),
        }
        key = self._authenticate(request)
        if key is None:
            self._record(row, started, status=401, error="invalid_api_key")
            return _error(401, "Incorrect, missing or revoked API key.", "invalid_api_key", "invalid_request_error")
        row["key_id"] = key.id
        raw = await request.read() if request.method == "POST" else b""
        body: dict[str, Any] = {}
        if raw:
            with suppress(ValueError):
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else {}
        prompt = prompt_text(body) if body else None
        row.update(
            model=body.get("model") if isinstance(body.get("model"), str) else request.match_info.get("model"),
            stream=body.get("stream") is True,
            logprobs=bool(body.get("logprobs")) or bool(body.get("top_logprobs")),
            max_tokens=_int(body.get("max_completion_tokens") or body.get("max_tokens")),
            prompt=prompt,
        )
        verdict = self.limits.admit(key, len(prompt) // 4 if prompt else 0) if raw else None
        if verdict is not None and not verdict.ok:
            self._record(row, started, status=429, error=f"rate_limit_{verdict.which}")
            return _error(
                429,
                f"Rate limit reached for {verdict.which} on key {key.id}; retry in {verdict.retry_after:.1f} s.",
                "rate_limit_exceeded",
                verdict.which,
                verdict.headers,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        if self.upstream_key:
            headers["Authorization"] = f"Bearer {self.upstream_key}"
        url = self.upstream.with_path(self.upstream.path + "/" + tail)
        if request.query_string:
            url = url.with_query(request.query)
        assert self.session is not None
        try:
            async with self.session.request(request.method, url, data=raw or None, headers=headers) as upstream:
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
                if verdict is not None:
                    out_headers.update(verdict.headers)
                streamed = upstream.content_type == "text/event-stream"
                if streamed:
                    response, payload, cut = await _relay(request, upstream, out_headers)
                    if cut:
                        row["error"] = cut
                else:
                    payload = await upstream.read()
                    response = web.Response(
                        body=payload, status=upstream.status, reason=upstream.reason, headers=out_headers
                    )
                status = upstream.status
        except (aiohttp.ClientError, TimeoutError) as e:
            self._record(row, started, status=502, error=f"upstream: {type(e).__name__}")
            return _error(502, f"The upstream did not answer: {e}", "upstream_unavailable", "server_error")
        except asyncio.CancelledError:  # the client went away before the answer was complete
            self._record(row, started, status=499, error="client closed the request")
            raise
        if not streamed:  # send it now: what follows is bookkeeping, not the client's wait
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionResetError:
                row["error"] = "client closed the connection before the answer was sent"
        if raw:
            answer, prompt_tokens, completion_tokens = _answer(payload, streamed)
            if status >= 400:
                row["error"] = payload[:500].decode(errors="replace")
            else:  # for a cut stream, what the client received before the cut
                row["answer"] = answer
            row.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            self.limits.charge(key, (prompt_tokens or 0) + (completion_tokens or 0))
        self._record(row, started, status=status)
        return response

    def _record(self, row: dict[str, Any], started: float, *, status: int, error: str | None = None) -> None:
        row["status"], row["latency_ms"] = status, (time.perf_counter() - started) * 1000
        if error is not None:
            row["error"] = error
        self.log.append(row)


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
) -> tuple[web.StreamResponse, bytes, str | None]:
    """Relay a stream chunk by chunk as it arrives; an upstream or client that drops mid-stream ends it, and says so."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    chunks: list[bytes] = []
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
            chunks.append(chunk)
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientError, TimeoutError) as e:
        return response, b"".join(chunks), f"stream cut: {type(e).__name__}"
    return response, b"".join(chunks), None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Running:
    """A running gateway: point an OpenAI client at `base_url` with a key from its key store."""

    base_url: str
    host: str
    port: int
    gateway: Gateway


@contextmanager
def gateway_in_background(
    upstream: str,
    keys_path: str | Path,
    log_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    retention: Retention = "full",
    segment_rows: int = 100_000,
    upstream_key: str | None = None,
    trust_forwarded: bool = False,
) -> Iterator[Running]:
    """Run the gateway on its own event loop in a background thread until the block exits."""
    check_upstream(upstream)
    keys = KeyStore(keys_path)
    request_log = RequestLog(log_dir, retention=retention, segment_rows=segment_rows)
    gateway = Gateway(upstream, keys, request_log, upstream_key=upstream_key, trust_forwarded=trust_forwarded)
    try:
        with aio.app_in_background(gateway.app(), host, port, name="stillhouse-gateway") as (root, bound):
            yield Running(f"{root}/v1", host, bound, gateway)
    finally:
        request_log.close()
        keys.close()


def serve_gateway(
    upstream: str,
    keys_path: str | Path,
    log_dir: str | Path,
    *,
    on_ready: Callable[[Running], None] | None = None,
    **options: Any,
) -> None:
    """Run the gateway until interrupted (Ctrl-C or SIGTERM, both of which flush the log); what `stillhouse gateway`
    runs."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with gateway_in_background(upstream, keys_path, log_dir, **options) as running:
        if on_ready:
            on_ready(running)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()
