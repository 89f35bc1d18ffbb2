"""The one OpenAI-compatible HTTP client: collect, synth (through collect) and eval all talk through it.

It owns what every caller would otherwise get subtly wrong: the base URL's form (scheme, no
credentials in it), the API key from the environment (never written anywhere), one aiohttp session
with the key and pooled connections, reading OpenAI-shaped errors, and retrying 408/409/429/5xx after
the server's own Retry-After (seconds, `retry-after-ms`, or an HTTP date) with jittered back-off.
Collect's engine uses `post` on its hot path and schedules its own retries; `chat` retries in place.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from yarl import URL

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ratelimit import backoff, retry_after

RETRYABLE = frozenset({0, 408, 409, 429})  # 0: no HTTP answer at all (refused, reset, timed out); and every 5xx


def retryable(status: int) -> bool:
    return status in RETRYABLE or status >= 500


def check_base_url(url: str) -> str:
    """The base URL without a trailing slash, or one line saying how to fix it."""
    url = url.strip()
    if not url:
        raise StillhouseError("--base-url is empty; pass the endpoint, e.g. http://127.0.0.1:8000/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise StillhouseError(f"--base-url '{url}' has no http:// or https://; add it, e.g. http://{url}")
    if not parts.hostname:
        raise StillhouseError(f"--base-url '{url}' names no host")
    if parts.username or parts.password:
        raise StillhouseError(
            "--base-url has credentials in it (user:password@); remove them and put the key in an environment "
            "variable named by --api-key-env, so it is never written to the ledger"
        )
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as e:
        raise StillhouseError(f"--base-url '{url}': {e}") from None
    return url.rstrip("/")


def public_url(url: str) -> str:
    """The URL without credentials or query string, safe for the ledger and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def host_of(base_url: str) -> str:
    return urlsplit(base_url).hostname or ""


def is_local(base_url: str) -> bool:
    """Loopback endpoints (our own `serve`) need no API key."""
    return host_of(base_url) in _LOCAL_HOSTS


def api_key(env: str | None, base_url: str) -> str | None:
    """The key from `$env`; a remote endpoint without one is an error before anything is sent."""
    key = os.environ.get(env) if env else None
    if key or not env or is_local(base_url):
        return key or None
    raise StillhouseError(
        f"no API key: set ${env}, or name the variable that holds it with --api-key-env "
        "(pass --api-key-env '' for an endpoint that needs none)"
    )


def parse_completion(raw: bytes) -> dict[str, Any] | None:
    """The parsed answer, or None when it is not a chat completion (garbage, truncated, an error body)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        return None
    return data


def error_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        err = json.loads(raw).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except (ValueError, AttributeError):
        pass
    return raw[:300].decode(errors="replace").strip() or "(empty body)"


def describe(e: BaseException) -> str:
    """A transport failure in a few words."""
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


@dataclass(frozen=True)
class Reply:
    status: int  # 0 when no HTTP answer came
    headers: Mapping[str, str]
    raw: bytes
    error: str = ""  # the transport failure, when status is 0


class RequestError(StillhouseError):
    """A request the endpoint refused for good (4xx other than 408/409/429): the caller's input is at fault."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class Client:
    """One session to one OpenAI-compatible endpoint: `async with Client(url, key) as c: await c.chat(...)`."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        concurrency: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        backoff_s: float = 1.0,
    ):
        self.base_url = check_base_url(base_url)
        self._key, self.max_retries, self.backoff_s = key, max_retries, backoff_s
        self.chat_url = URL(self.base_url + "/chat/completions")  # parsed once: aiohttp would per request
        self._concurrency, self._timeout_s = concurrency, timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s, sock_connect=min(30.0, self._timeout_s)),
            headers=headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies, and skipping the jar is cheaper
        )
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client inside `async with`")
        return self._session

    def redact(self, text: str) -> str:
        """`text` with the API key blanked, for messages and stored errors."""
        return text.replace(self._key, "***") if self._key else text

    async def post(self, body: bytes, url: URL | None = None) -> Reply:
        """One POST (chat completions by default); a transport failure is a Reply with status 0."""
        try:
            async with self.session.post(url or self.chat_url, data=body) as r:
                return Reply(r.status, r.headers, await r.read())
        except (aiohttp.ClientError, TimeoutError) as e:
            return Reply(0, {}, b"", describe(e))

    async def preflight(self) -> None:
        """Fail with one line if nothing answers at the base URL (any HTTP status will do)."""
        try:
            async with self.session.get(self.base_url + "/models", timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StillhouseError(f"cannot reach {public_url(self.base_url)}: {describe(e)}") from None

    async def models(self) -> list[str]:
        """The ids `/models` lists."""
        reply = await self._get(self.base_url + "/models")
        try:
            return [m["id"] for m in json.loads(reply)["data"]]
        except (ValueError, KeyError, TypeError) as e:
            raise StillhouseError(f"{public_url(self.base_url)}/models did not list models ({e})") from None

    async def _get(self, url: str) -> bytes:
        try:
            async with self.session.get(url) as r:
                raw = await r.read()
                if r.status != 200:
                    raise StillhouseError(f"GET {public_url(url)}: HTTP {r.status}: {self.redact(error_message(raw))}")
                return raw
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StillhouseError(f"cannot reach {public_url(self.base_url)}: {describe(e)}") from None

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, retried after 408/409/429/5xx and dropped connections as the server asks.

        Raises RequestError when the endpoint refuses the request itself (its 4xx message says why),
        StillhouseError when it stops answering.
        """
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            reply = await self.post(data)
            if reply.status == 200 and (answer := parse_completion(reply.raw)) is not None:
                return answer
            if reply.status and not retryable(reply.status) and reply.status != 200:
                raise RequestError(reply.status, self.redact(error_message(reply.raw)))
            last = reply.error or f"HTTP {reply.status}: {self.redact(error_message(reply.raw))}"
            if attempt < self.max_retries:
                wait = retry_after(reply.headers)
                await asyncio.sleep(backoff(attempt, self.backoff_s) if wait is None else wait)
        raise StillhouseError(f"{public_url(self.base_url)} did not answer after {self.max_retries + 1} tries: {last}")
