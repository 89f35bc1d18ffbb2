"""A command's options generated from its stage's config, so the CLI never restates a knob by hand.

`@config_options(TrainConfig)` on a command whose signature has a `config: TrainConfig` parameter
replaces that parameter with one typer option per config field (name, type, default and help text
from the field), and on invocation builds the config from them: the same validation, and the same
one-line message naming the flag, as the Python API gives.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer

from stillhouse.core.config import Config

F = TypeVar("F", bound=Callable[..., Any])


def _cli_type(annotation: Any) -> Any:
    """The field's type as typer reads options: Literal choices as str, `X | None` kept, tuples as lists."""
    origin = get_origin(annotation)
    if origin is Literal:
        return str
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return typing.Optional[_cli_type(inner[0])] if len(inner) == 1 else str  # noqa: UP045 (built at run time)
    if origin in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return list[_cli_type(args[0]) if args else str]  # type: ignore[misc]
    return annotation


def _help(field: Any, annotation: Any) -> str:
    text = field.description or ""
    choices = _literals(annotation)
    return f"{text} One of: {', '.join(map(str, choices))}." if choices else text


def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [x for a in get_args(annotation) for x in _literals(a)]


def config_options(
    model: type[Config],
    *,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    param: str = "config",
) -> Callable[[F], F]:
    """Give the decorated command one option per field of `model` (less `exclude`) in place of `param`;
    `defaults` overrides a field's default on the command line (e.g. the embedded student)."""
    skipped, overrides = set(exclude), dict(defaults or {})

    def decorate(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != param
        ]
        fields = {name: f for name, f in model.model_fields.items() if name not in skipped}
        for name, f in fields.items():
            decl = model.flag_of(name)
            option = typer.Option(decl, help=_help(f, f.annotation), show_default=f.default not in (None, [], {}))
            default = overrides[name] if name in overrides else f.get_default(call_default_factory=True)
            if isinstance(default, list | tuple):
                default = list(default) or None
            annotation = Annotated[_cli_type(f.annotation), option]  # type: ignore[valid-type]
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            )

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
            values = {
                k: (v if v is not None or fields[k].default is None else fields[k].default) for k, v in values.items()
            }
            kwargs[param] = model(**values)
            return fn(**kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate
