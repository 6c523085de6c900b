"""Strict YAML configs: read with ``yaml.safe_load`` into dataclasses.

An unknown key is an error listing the valid keys, a value of the wrong type is an error naming
the key and the type expected; nothing is silently ignored. A config may name a ``base:`` config
(a path relative to its own dir) whose keys it inherits and overrides, section by section; on the
command line, dotted overrides (``--set optim.learning_rate=1e-4 model.lora.rank=8``, values in
YAML syntax) change single keys of the result.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import IO, Any, Sequence, TypeVar

import yaml

from mtbi.errors import MtbiError
from mtbi.stage import atomic_write

T = TypeVar("T")
BASE_KEY = "base"  # a config's parent config, relative to the config's own dir
YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


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


def load_config(path: str | Path | None, cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Read the YAML file ``path`` (with its ``base:`` configs; None: the defaults of ``cls``) into
    the dataclass ``cls``, after the dotted ``overrides`` (``key.subkey=value``)."""
    data = read_mapping(path) if path is not None else {}
    for item in overrides:
        _apply_override(data, item, cls)
    source = str(path) if path is not None else "defaults"
    return from_dict(cls, data, f"{source} + --set" if overrides else source)


def read_mapping(path: str | Path) -> dict:
    """The YAML file ``path`` as a mapping, merged over its ``base:`` chain, unchecked (for a key
    read without building the config's dataclass and what it imports)."""
    return _read_with_bases(Path(path), [])


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise MtbiError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise MtbiError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    if data is not None and not isinstance(data, dict):
        raise MtbiError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data or {}


def _read_with_bases(path: Path, chain: list[Path]) -> dict:
    """``path``'s mapping merged over those of its ``base:`` chain."""
    if path.resolve() in chain:
        raise MtbiError(f"{path}: its base configs form a loop ({' -> '.join(map(str, chain))})")
    data = _read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise MtbiError(f"{path}: {BASE_KEY}: expected the path of a config file, got {base!r}")
    return merge_configs(_read_with_bases(path.parent / base, [*chain, path.resolve()]), data)


def merge_configs(base: dict, update: dict) -> dict:
    """``update`` over ``base``: mappings merged key by key, other values (lists too) replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_configs(merged[key], value)
        merged[key] = value
    return merged


def _apply_override(data: dict, item: str, cls: type) -> None:
    """Set the dotted key of ``item`` (``a.b=value``) in ``data``, checked against ``cls``."""
    name, sep, text = item.partition("=")
    keys = name.split(".")
    if not sep or not all(keys):
        raise MtbiError(f"--set {item}: expected key.subkey=value, e.g. optim.learning_rate=1e-4")
    hint: Any = cls
    for depth, key in enumerate(keys):
        where = f" in '{'.'.join(keys[:depth])}'" if depth else ""
        if not dataclasses.is_dataclass(hint):
            if typing.get_origin(hint) is dict or hint is Any:
                break  # a free-form mapping: any key
            raise MtbiError(f"--set {item}: '{'.'.join(keys[:depth])}' is a value, not a section")
        fields = [f.name for f in dataclasses.fields(hint) if f.init]
        if key not in fields:
            raise MtbiError(f"--set {item}: unknown key '{key}'{where}; valid keys: {', '.join(fields)}")
        hint = _section_type(typing.get_type_hints(hint)[key])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise MtbiError(f"--set {item}: the value is not valid YAML") from None
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _section_type(hint: Any) -> Any:
    """The dataclass of an optional section (``X | None`` -> ``X``), else ``hint``."""
    options = [o for o in typing.get_args(hint) if o is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(options) == 1:
        return options[0]
    return hint


def dump_config(config: Any, stream: IO[str]) -> None:
    """Write a dataclass config to ``stream`` as YAML, defaults included."""
    yaml.safe_dump(dataclasses.asdict(config), stream, sort_keys=False)


def save_config(config: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML (the resolved config of a run)."""
    with atomic_write(path) as f:
        dump_config(config, f)


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
    if hint is float and isinstance(value, str) and YAML12_FLOAT.fullmatch(value):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise MtbiError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
