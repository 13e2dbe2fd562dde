"""Command-line flags generated from a settings model, so each setting has one name and one
default (the field's): ``max_batch_size`` is ``--max-batch-size`` everywhere, its help is the
field's description with the default, its choices the field's ``Literal``. Also the one way to
rename a flag: the old spelling keeps working for a release and says what replaced it.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# A list field takes one value per flag, repeated: its flag is the singular (both are URLs).
_SINGULAR = {"upstreams": "upstream", "grm_urls": "grm_url"}


def flag_of(field: str) -> str:
    return "--" + _SINGULAR.get(field, field).replace("_", "-")


def add_setting_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    fields: Iterable[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    env_prefix: str | None = None,
) -> None:
    """One flag per field of ``model`` (``dest`` = the field name).

    ``defaults`` replace a field's default for this command (shown in ``--help``). With
    ``env_prefix`` the flags default to None, so that the settings' environment variables
    (``env_prefix`` + the field's name) and then the field's own default apply: ``--help``
    names both.
    """
    defaults = defaults or {}
    for name in fields:
        info = model.model_fields[name]
        kind, choices, many = _kind(info.annotation)
        required = info.is_required() and name not in defaults
        default = (
            None if required else defaults.get(name, info.get_default(call_default_factory=True))
        )
        shown = "required" if required else f"default: {_show(default)}"
        if many:
            shown = "repeat the flag for several; " + shown
        if env_prefix:
            shown += f"; env {env_prefix}{name.upper()}"
        kwargs: dict[str, Any] = {
            "dest": name,
            "help": f"{(info.description or '').rstrip('.')} ({shown})",
            "default": None if env_prefix else default,
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            metavar = "URL" if name in _SINGULAR else None
            kwargs.update(type=kind, choices=choices, metavar=metavar)
            if many:
                kwargs["action"] = "append"
        parser.add_argument(flag_of(name), **kwargs)


def model_from_flags(model: type[M], args: argparse.Namespace) -> M:
    """``model`` from the flags :func:`add_setting_flags` made for all its fields; a bad value
    is a ValueError naming the flag and the rule (no pydantic dump)."""
    try:
        return model(**{name: getattr(args, name) for name in model.model_fields})
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = flag_of(str(error["loc"][0])) if error["loc"] else model.__name__
        raise ValueError(f"{flag} {error['input']!r}: {error['msg']}") from None


def _kind(annotation: Any) -> tuple[Any, list[Any] | None, bool]:
    """(argparse type, choices, repeated) of a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin is typing.Literal:
        return type(args[0]), list(args), False
    if origin in (list, Sequence):
        kind, choices, _ = _kind(args[0])
        return kind, choices, True
    if annotation in (int, float, str, bool, Path):
        return annotation, None, False
    return str, None, False


def _show(value: Any) -> str:
    return "none" if value in (None, []) else str(value)


class _Deprecated(argparse.Action):
    """An old spelling: stores like the new flag, and says once what replaced it."""

    def __init__(self, option_strings: list[str], dest: str, new: str, append: bool,
                 **kwargs: Any) -> None:  # fmt: skip
        self.new, self.append = new, append
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        print(f"{parser.prog}: {option_string} is deprecated and goes in the next release; "
              f"use {self.new}", file=sys.stderr)  # fmt: skip
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, *,
                     append: bool = False, dest: str | None = None,
                     **kwargs: Any) -> None:  # fmt: skip
    """``old`` keeps working as ``new`` (same ``dest``, unless the old flag's value means
    something else and needs its own; ``kwargs`` as ``new``'s ``type``)."""
    dest = dest or next(a.dest for a in parser._actions if new in a.option_strings)
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, append=append,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)  # fmt: skip


def deprecated_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The old spellings ``parser`` still accepts (the vocabulary test skips them)."""
    return {s for a in parser._actions if isinstance(a, _Deprecated) for s in a.option_strings}
