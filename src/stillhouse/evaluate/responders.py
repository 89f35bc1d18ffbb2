"""The two sides of an evaluation: a local model directory, or an OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from stillhouse.core import aio
from stillhouse.core.client import Client, RequestError, api_key, check_base_url, public_url
from stillhouse.core.errors import StillhouseError

Chat = list[dict[str, str]]


class Responder(Protocol):
    name: str

    def respond(self, chats: Sequence[Chat]) -> list[str]: ...


class LocalModel:
    """A model directory, answered here with batched greedy generation (torch loads only when one is asked for)."""

    def __init__(self, path: str | Path, batch_size: int = 32, max_new_tokens: int = 192):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path, self.name = Path(path), str(path)
        if not (self.path / "config.json").is_file():
            raise StillhouseError(f"{self.path} is not a model directory (no config.json)")
        if not any((self.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            raise StillhouseError(f"{self.path} has no tokenizer files (tokenizer.json); save the tokenizer beside it")
        try:
            self.tok = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path).eval()
        except (OSError, ValueError) as e:
            raise StillhouseError(f"cannot load the model in {self.path}: {str(e).splitlines()[0]}") from None
        if not self.tok.chat_template:
            raise StillhouseError(f"the tokenizer in {self.path} has no chat template; add one to evaluate on chats")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def respond(self, chats: Sequence[Chat]) -> list[str]:
        from stillhouse.serve.generate import greedy

        return greedy(self.model, self.tok, chats, self.max_new_tokens, self.batch_size)


class Endpoint:
    """An OpenAI-compatible chat endpoint, asked at temperature 0 with bounded concurrency."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        concurrency: int = 8,
        max_tokens: int = 192,
        retries: int = 4,
        api_key_env: str | None = "OPENAI_API_KEY",
    ):
        self.base_url = check_base_url(base_url)
        if urlsplit(self.base_url).path in ("", "/"):  # a bare host: the OpenAI routes live under /v1
            self.base_url += "/v1"
        self.key = api_key(api_key_env, self.base_url)
        self.model, self.concurrency, self.max_tokens, self.retries = model, concurrency, max_tokens, retries
        self.name = f"{public_url(self.base_url)} {model or ''}".strip()

    def respond(self, chats: Sequence[Chat]) -> list[str]:
        return aio.run(self._respond(chats))

    async def _respond(self, chats: Sequence[Chat]) -> list[str]:
        gate = asyncio.Semaphore(self.concurrency)
        done = 0
        client = Client(self.base_url, self.key, concurrency=self.concurrency, timeout_s=120, max_retries=self.retries)
        async with client:
            if not self.model:
                self.model = (await client.models() or [""])[0]
                self.name = f"{public_url(self.base_url)} {self.model}"

            async def one(chat: Chat) -> str:
                nonlocal done
                body = {"model": self.model, "messages": chat, "temperature": 0, "max_tokens": self.max_tokens}
                async with gate:
                    try:
                        data = await client.chat(body)
                    except RequestError as e:
                        if e.status in (400, 413, 422):  # the request itself: say so, do not blame the server
                            raise StillhouseError(
                                f"{self.name} refused a prompt of the suite ({e}); check --max-tokens and the "
                                "suite's messages"
                            ) from None
                        raise StillhouseError(f"{self.name} answered {e} (is the model served there?)") from None
                    except StillhouseError as e:
                        raise StillhouseError(
                            f"{self.name} stopped answering during the eval ({done} of {len(chats)} prompts "
                            f"answered): {e}"
                        ) from None
                done += 1
                return (data["choices"][0].get("message") or {}).get("content") or ""

            tasks = [asyncio.create_task(one(c)) for c in chats]
            try:
                return [r.strip() for r in await asyncio.gather(*tasks)]
            finally:
                for t in tasks:
                    t.cancel()


def responder(spec: str, model: str | None = None, max_tokens: int = 192, batch_size: int = 32) -> Responder:
    """A URL is an endpoint; anything else is a model directory, generated here."""
    if spec.startswith(("http://", "https://")):
        return Endpoint(spec, model, max_tokens=max_tokens)
    if not (Path(spec) / "config.json").exists():
        raise StillhouseError(f"'{spec}' is neither an http(s) endpoint nor a model directory (no config.json)")
    return LocalModel(spec, max_new_tokens=max_tokens, batch_size=batch_size)
