"""Stage configs: pydantic models whose fields are the stage's knobs, checked where they are made.

Every field carries its type, range and a one-line description, so the Python API and the CLI (whose
options are generated from these fields, see stillhouse.cli.options) refuse the same bad values with
the same message, before any work. A bad value raises `ConfigError`, which names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from stillhouse.core.errors import StillhouseError


def flag(name: str) -> str:
    """The CLI spelling of a config field: `max_tokens` -> `--max-tokens`."""
    return "--" + name.replace("_", "-")


class ConfigError(StillhouseError, ValueError):
    """A config value out of its range or of the wrong type; `field` names it (None for a cross-field rule)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _describe(error: Mapping[str, Any], model: type[Config]) -> tuple[str | None, str]:
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    field = loc[0] if loc else None
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    bounds = {
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "less_than": f"must be less than {ctx.get('lt')}",
    }
    if kind in bounds:
        reason = bounds[kind]
    elif kind == "literal_error":
        reason = f"must be one of {ctx.get('expected')}"
    elif kind == "extra_forbidden":
        reason = "is not a setting of this stage"
    else:
        reason = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if field is None:
        return None, reason
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" {value!r}"
    return field, f"{model.flag_of(field)}{shown}: {reason}"


class Config(BaseModel):
    """Base of every stage config: unknown fields refused, assignments validated, errors one line."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            field, message = _describe(e.errors()[0], type(self))
            raise ConfigError(message, field) from None

    @classmethod
    def flag_of(cls, field: str) -> str:
        """The option that sets `field` (a field may name its own, e.g. max_steps is `--steps`)."""
        info = cls.model_fields.get(field)
        extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
        return flag(str(extra.get("flag", field)))
