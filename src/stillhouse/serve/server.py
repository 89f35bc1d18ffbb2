"""An OpenAI-compatible HTTP server for a local model, so the official SDK and common tools work unchanged.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions. Requests are validated with pydantic
and every problem comes back as an OpenAI-shaped error body (type, message, param, code) with a 4xx status;
generation is delegated to the batching `Engine`. `serve_in_background` runs the server in a thread with its
own event loop, for tests and notebooks; `serve_forever` is what `stillhouse serve` runs.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import torch
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stillhouse.core import aio
from stillhouse.core.errors import StillhouseError
from stillhouse.serve.engine import MAX_TOP_LOGPROBS, Delta, Engine, SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from stillhouse.forensics.key import WatermarkKey

log = logging.getLogger(__name__)

MAX_STOP = 4


class APIError(Exception):
    """An error to send as an OpenAI error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, type: str = ""):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status)


# --- request schemas (unknown fields are ignored, as many tools send extras) ---------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Generate(_Body):
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: str | None = None
    ignore_eos: bool = False  # not OpenAI (vLLM has it): generate max_tokens whatever the model says, to benchmark


class ChatRequest(_Generate):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None


class CompletionRequest(_Generate):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None


_B = TypeVar("_B", bound=_Body)


def _param(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the OpenAI-style parameter name, e.g. messages[0].role."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isidentifier() or part in {"str", "int", "float", "bool", "list", "dict"}:
            continue  # a union member's tag, not a field
        else:
            out += f".{part}" if out else part
    return out


def _validation_error(e: ValidationError) -> APIError:
    err = e.errors(include_url=False)[0]
    param = _param(err["loc"])
    if err["type"] == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    kind = "invalid_type" if err["type"].endswith("_type") or "instance" in err["type"] else "invalid_value"
    return APIError(400, f"Invalid value for '{param}': {err['msg']}.", param=param, code=kind)


# --- the app -------------------------------------------------------------------------------------------------


def fingerprint(model_dir: Path) -> str:
    """Identifies the exact weights and config served (a change to either changes it)."""
    h = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.suffix in {".json", ".safetensors", ".bin"} and path.is_file():
            with path.open("rb") as f:
                h.update(path.name.encode() + hashlib.file_digest(f, "sha256").digest())
    return "fp_" + h.hexdigest()[:12]


class _API:
    """Route handlers: parse, validate, hand to the engine, shape the answer."""

    def __init__(self, engine: Engine, model_name: str, system_fingerprint: str):
        self.engine, self.model_name, self.fingerprint = engine, model_name, system_fingerprint
        self.created = int(time.time())
        # a tokenizer for this thread only: the engine's is in use by its worker (Rust tokenizers are not re-entrant)
        self.tokenizer = copy.deepcopy(engine.tokenizer)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        self._check_model(request.match_info["model"])
        return web.json_response(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "stillhouse"}

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(
                404,
                f"The model '{name}' does not exist; this server serves '{self.model_name}'.",
                param="model",
                code="model_not_found",
            )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, ChatRequest)
        self._check_model(body.model)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true.", param="top_logprobs")
        if self.tokenizer.chat_template is None:
            raise APIError(400, "This model has no chat template; use /v1/completions.", param="messages")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m)} for m in body.messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = self.tokenizer(text, add_special_tokens=False).input_ids
        max_tokens, which = (
            (body.max_completion_tokens, "max_completion_tokens")
            if body.max_completion_tokens
            else (body.max_tokens, "max_tokens")
        )
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        params = self._params(body, [prompt], max_tokens, which, logprobs, "messages")
        return await self._respond(request, body, [prompt], params, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, CompletionRequest)
        self._check_model(body.model)
        for name, ok in (
            ("echo", not body.echo),
            ("suffix", body.suffix is None),
            ("best_of", body.best_of in (None, body.n or 1)),
        ):
            if not ok:
                raise APIError(400, f"'{name}' is not supported by this server.", param=name, code="unsupported_value")
        prompts = self._prompts(body.prompt)
        params = self._params(body, prompts, body.max_tokens or 16, "max_tokens", body.logprobs, "prompt")
        return await self._respond(request, body, prompts, params, chat=False)

    def _prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        items: list[Any] = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        if not items:
            raise APIError(400, "'prompt' is empty.", param="prompt", code="invalid_value")
        vocab = len(self.tokenizer)
        out = []
        for item in items:
            ids = self.tokenizer(item).input_ids if isinstance(item, str) else item
            if not ids:
                raise APIError(400, "'prompt' is empty.", param="prompt", code="invalid_value")
            if not all(0 <= i < vocab for i in ids):
                raise APIError(400, f"'prompt' has token ids outside 0..{vocab - 1}.", param="prompt")
            out.append(ids)
        return out

    def _params(
        self,
        body: _Generate,
        prompts: list[list[int]],
        max_tokens: int | None,
        max_name: str,
        logprobs: int | None,
        prompt_name: str,
    ) -> SamplingParams:
        ctx, n = self.engine.context_length, body.n or 1
        if n * len(prompts) > self.engine.max_batch:
            raise APIError(
                400, f"n x prompts must be at most {self.engine.max_batch} here.", param="n", code="invalid_value"
            )
        if max_tokens is not None and max_tokens > ctx:
            raise APIError(
                400,
                f"{max_name} is too large: {max_tokens}. This model's context holds at most {ctx} tokens.",
                param=max_name,
                code="invalid_value",
            )
        longest = max(len(p) for p in prompts)
        if max_tokens is None:
            max_tokens = ctx - longest
        if longest + max_tokens > ctx or max_tokens < 1:
            raise APIError(
                400,
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{longest + max_tokens} tokens ({longest} in the {prompt_name}, {max_tokens} in the completion). "
                f"Please reduce the length of the {prompt_name} or completion.",
                param=prompt_name,
                code="context_length_exceeded",
            )
        bias = []
        for key, value in (body.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= len(self.tokenizer):
                raise APIError(400, f"Invalid key in 'logit_bias': {key!r} is not a token id.", param="logit_bias")
            bias.append((int(key), value))
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=stop,
            logprobs=logprobs,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            logit_bias=tuple(bias),
            ignore_eos=body.ignore_eos,
        )

    async def _respond(
        self, request: web.Request, body: _Generate, prompts: list[list[int]], params: SamplingParams, *, chat: bool
    ) -> web.StreamResponse:
        n = body.n or 1
        head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": self.fingerprint,
        }
        usage = {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": 0, "total_tokens": 0}
        async with aclosing(_generate(self.engine, prompts, params, n, stream=bool(body.stream))) as deltas:
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                return await self._stream(request, head, deltas, usage, n * len(prompts), chat, include_usage)
            return await self._complete(head, deltas, usage, n * len(prompts), chat, params.logprobs is not None)

    async def _complete(
        self,
        head: dict[str, Any],
        deltas: AsyncIterator[tuple[int, Delta]],
        usage: dict[str, int],
        count: int,
        chat: bool,
        want: bool,
    ) -> web.Response:
        texts = [""] * count
        tokens: list[list[TokenLogprob]] = [[] for _ in texts]
        finish: list[str | None] = [None] * len(texts)
        async for i, d in deltas:
            texts[i] += d.text
            tokens[i] += d.logprobs
            if d.finish_reason:
                finish[i] = d.finish_reason
                usage["completion_tokens"] += d.completion_tokens
        if "error" in finish:
            raise APIError(500, "The model failed while generating; see the server log.")
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        choices: list[dict[str, Any]]
        if chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": texts[i], "refusal": None},
                    "logprobs": {"content": _chat_logprobs(tokens[i]), "refusal": None} if want else None,
                    "finish_reason": finish[i],
                }
                for i in range(len(texts))
            ]
        else:
            choices = [
                {
                    "index": i,
                    "text": texts[i],
                    "logprobs": _completion_logprobs(tokens[i]) if want else None,
                    "finish_reason": finish[i],
                }
                for i in range(len(texts))
            ]
        return web.json_response({**head, "choices": choices, "usage": usage})

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        deltas: AsyncIterator[tuple[int, Delta]],
        usage: dict[str, int],
        choices: int,
        chat: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
        extra = {"usage": None} if include_usage else {}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

        if chat:
            for i in range(choices):
                delta = {"role": "assistant", "content": ""}
                await send(
                    {
                        **head,
                        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                        **extra,
                    }
                )
        async for i, d in deltas:
            if d.finish_reason == "error":
                error = {
                    "message": "The model failed while generating.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                await send({"error": error})
                break
            if d.finish_reason:
                usage["completion_tokens"] += d.completion_tokens
            if chat:
                lp: dict[str, Any] | None = (
                    {"content": _chat_logprobs(d.logprobs), "refusal": None} if d.logprobs else None
                )
                choice = {"index": i, "delta": {"content": d.text} if d.text else {}, "logprobs": lp}
            else:
                lp = _completion_logprobs(d.logprobs) if d.logprobs else None
                choice = {"index": i, "text": d.text, "logprobs": lp}
            await send({**head, "choices": [{**choice, "finish_reason": d.finish_reason}], **extra})
        if include_usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await send({**head, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _text(m: Message) -> str:
    return m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)


def _chat_logprobs(tokens: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": list(t.raw),
            "top_logprobs": [{"token": s, "logprob": v, "bytes": list(raw)} for s, raw, v in t.top],
        }
        for t in tokens
    ]


def _completion_logprobs(tokens: list[TokenLogprob]) -> dict[str, list[Any]]:
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{s: v for s, _, v in t.top} for t in tokens],
        "text_offset": [t.offset for t in tokens],
    }


async def _parse(request: web.Request, schema: type[_B]) -> _B:
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e) from None


async def _generate(
    engine: Engine, prompts: list[list[int]], params: SamplingParams, n: int, *, stream: bool
) -> AsyncGenerator[tuple[int, Delta], None]:
    """(choice index, delta) pairs as the engine produces them; the requests are cancelled if we stop early.

    Waking the event loop takes the GIL from the engine thread, so it is woken at most once per batch of deltas,
    and for a non-streamed answer only when a choice finishes.
    """
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    inbox: deque[tuple[int, Delta]] = deque()
    wake_pending = False

    def wake() -> None:
        nonlocal wake_pending
        wake_pending = False
        ready.set()

    def deliver(d: Delta, base: int) -> None:  # engine thread
        nonlocal wake_pending
        inbox.append((base + d.index, d))
        if (stream or d.finish_reason) and not wake_pending:
            wake_pending = True
            with suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(wake)

    requests = [
        engine.submit(prompt, params, n, functools.partial(deliver, base=p * n)) for p, prompt in enumerate(prompts)
    ]
    remaining = n * len(prompts)
    try:
        while remaining:
            await ready.wait()
            ready.clear()
            while inbox:
                i, d = inbox.popleft()
                remaining -= d.finish_reason is not None
                yield i, d
    finally:
        for req in requests:
            engine.cancel(req)


def _app(engine: Engine, model_name: str, system_fingerprint: str, api_key: str | None) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            if api_key is not None:
                given = request.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    raise APIError(401, "Incorrect or missing API key.", code="invalid_api_key")
            return await handler(request)
        except APIError as e:
            return e.response()
        except web.HTTPException as e:  # unknown route, wrong method, body too large
            message = f"{e.reason}: {request.method} {request.path}"
            return APIError(e.status, message, code=e.reason.lower().replace(" ", "_")).response()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unexpected error serving %s", request.path)
            return APIError(500, "The server had an error while processing your request.").response()

    api = _API(engine, model_name, system_fingerprint)
    app = web.Application(middlewares=[errors])
    app.add_routes(
        [
            web.get("/v1/models", api.models),
            web.get("/v1/models/{model}", api.model),
            web.post("/v1/chat/completions", api.chat),
            web.post("/v1/completions", api.completions),
        ]
    )
    return app


# --- running it ----------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running server: point an OpenAI client at `base_url` with model `model`."""

    base_url: str
    model: str
    host: str
    port: int
    api_key: str | None
    engine: Engine


@contextmanager
def serve_in_background(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    model_name: str | None = None,
    max_batch: int = 64,
    watermark: WatermarkKey | None = None,
) -> Iterator[Server]:
    """Serve a model directory from a background thread until the block exits.

    With a `watermark` key every answer carries its KGW watermark; only the key's fingerprint is logged.
    """
    model_dir = Path(model_dir)
    hook = None
    if watermark is not None:
        from stillhouse.forensics.processor import WatermarkProcessor

        hook = WatermarkProcessor(watermark)
        log.info("watermarking answers with key %s", watermark.fingerprint)
    engine = Engine.from_dir(model_dir, max_batch=max_batch, logits_hook=hook)
    name = model_name or model_dir.resolve().name
    app = _app(engine, name, fingerprint(model_dir), api_key)
    try:  # closing the engine first ends unfinished requests with an error, so shutdown does not wait on them
        with aio.app_in_background(app, host, port, name="stillhouse-serve") as (root, bound):
            try:
                yield Server(f"{root}/v1", name, host, bound, api_key, engine)
            finally:
                engine.close()
    finally:
        engine.close()  # idempotent: also when listening failed


def serve_forever(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    threads: int | None = None,
    on_ready: Callable[[Server], None] | None = None,
    watermark: WatermarkKey | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C); `on_ready` is told the bound address once requests are accepted.

    `threads` sets torch's intra-op threads for the process: on a CPU shared with other jobs, 1 can be many times
    faster than one per core, as every small op then waits on a descheduled sibling thread.
    """
    if threads is not None:
        if threads < 1:
            raise StillhouseError("--threads must be at least 1")
        torch.set_num_threads(threads)
    with serve_in_background(
        model_dir, host=host, port=port, api_key=api_key, model_name=model_name, watermark=watermark
    ) as server:
        if on_ready:
            on_ready(server)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()
