"""What a model's tokens cost, so a run can stop at `--max-cost`.

Prices are USD per million tokens (input, output), the providers' list prices when this table was
written; they change, so a user's own table (`--prices FILE`, JSON or TOML) extends and overrides it:

    {"my-model": {"input": 0.5, "output": 1.5}}        # or in TOML: [my-model] input = 0.5 ...
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from stillhouse.core.errors import StillhouseError


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


BUILTIN: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-1.5-flash": Price(0.075, 0.30),
    "deepseek-chat": Price(0.27, 1.10),
    "deepseek-reasoner": Price(0.55, 2.19),
    "mistral-large": Price(2.00, 6.00),
    "mistral-small": Price(0.20, 0.60),
}


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The built-in table, extended and overridden by the user's file."""
    table = dict(BUILTIN)
    if path is None:
        return table
    path = Path(path)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        for model, p in raw.items():
            table[model] = Price(float(p["input"]), float(p["output"]))
    except OSError as e:
        raise StillhouseError(f"cannot read price table {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StillhouseError(
            f'{path}: a price table maps model -> {{"input": USD per 1M tokens, "output": ...}} ({e!r})'
        ) from None
    return table


def price_for(model: str, table: dict[str, Price]) -> Price | None:
    """Exact name first, then the longest table entry the name starts with ('gpt-4o-mini-2024-07-18')."""
    name = model.rsplit("/", 1)[-1]  # 'openai/gpt-4o' on routers
    for candidate in (model, name):
        if candidate in table:
            return table[candidate]
    matches = [k for k in table if name.startswith(k)]
    return table[max(matches, key=len)] if matches else None
