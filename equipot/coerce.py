"""Values checked against a dataclass's type annotations, and the dataclass's documented fields.

Config files, command-line overrides and model options arrive as YAML values; each is checked
against the annotation of the field it sets (an int is accepted for a float, nothing else is
converted silently), and a wrong one is a ValueError naming the key. The same dataclasses'
``Attributes:`` docstring sections are the help text of ``equipot train --help``.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any, Union


def type_name(tp: Any) -> str:
    """A readable name of an annotation (``float``, ``int | None``)."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (int -> float allowed); ValueError names ``key``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, item, f"{key}[{k}]") for k, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"{key}: expected {type_name(tp)}, got {value!r}")
    return value


def coerce_fields(cls: type, values: dict[str, Any], prefix: str, skip: Sequence[str] = ()) -> dict[str, Any]:
    """``values`` checked against the fields of dataclass ``cls``; ValueError names an unknown key
    as ``<prefix>.<key>`` and lists the valid ones (``skip``: fields that may not be set this way)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    out = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key '{prefix}.{key}'{did_you_mean(key, names, prefix)} "
                             f"(valid keys in '{prefix}': {', '.join(names)})")
        out[key] = coerce(value, hints[key], f"{prefix}.{key}")
    return out


# Names other packages use for equipot's keys (MACE, NequIP, SchNetPack).
ALIASES = {"name": "backbone", "model": "backbone", "r_max": "cutoff", "num_layers": "layers",
           "num_interactions": "layers", "n_interactions": "layers", "num_channels": "hidden",
           "batchsize": "batch_size", "learning_rate": "lr", "max_epochs": "epochs"}


def did_you_mean(key: str, names: Sequence[str], prefix: str) -> str:
    """``"; did you mean 'model.hidden'?"`` for the closest of ``names`` to a mistyped ``key``
    (or the equipot name of another package's key), or ""."""
    if ALIASES.get(key) in names:
        return f"; did you mean '{prefix}.{ALIASES[key]}'?"
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f"; did you mean '{prefix}.{close[0]}'?" if close else ""


def attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of a class docstring (continuation
    lines joined), whatever the docstring's indentation."""
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = next(k for k, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return docs
    entry_indent = None
    current: list[str] = []
    for line in lines[start + 1:]:
        stripped = line.strip()
        if not stripped:
            current = []
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent:
            break
        if indent == entry_indent and ":" in stripped:
            head, text = stripped.split(":", 1)
            current = [n.strip() for n in head.split(",")]  # "a, b: text" documents both
            for name in current:
                docs[name] = text.strip()
        else:
            for name in current:
                docs[name] += " " + stripped
    return docs
