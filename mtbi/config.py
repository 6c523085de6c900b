"""Strict YAML configs: read with ``yaml.safe_load`` into dataclasses.

An unknown key is an error listing the valid keys, a value of the wrong type is an error naming
the key and the type expected; nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtbi.errors import MtbiError
from mtbi.io import atomic_write

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, source: str) -> T:
    """Build the dataclass ``cls`` from ``data``, checking keys and types; ``source`` names
    where ``data`` came from in error messages."""
    if not isinstance(data, dict):
        raise MtbiError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise MtbiError(f"{source}: unknown key '{key}'; valid keys: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{source}: {name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise MtbiError(f"{source}: missing required key '{name}'")
    return cls(**values)


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read the YAML file ``path`` into the dataclass ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise MtbiError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    return from_dict(cls, data or {}, str(path))


def save_config(config: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML (the resolved config of a run)."""
    with atomic_write(path) as f:
        yaml.safe_dump(dataclasses.asdict(config), f, sort_keys=False)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except MtbiError as err:
                errors.append(str(err))
        raise MtbiError(errors[0] if errors else f"{where}: expected {hint}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise MtbiError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise MtbiError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(hint) or (Any, Any)
        return {_convert(k, key_type, where): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise MtbiError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
