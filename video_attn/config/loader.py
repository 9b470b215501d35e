"""YAML configs with ``_base_`` inheritance, dotted ``KEY=VALUE`` overrides and a typed schema.

The schema (``video_attn.config.schema``) is a tree of dataclasses; every key a config may hold is a field
there, with its type and default. Loading merges, in order: the schema defaults, each ``_base_`` file
(recursively, paths relative to the file naming them), the file itself, then the command-line overrides.
An unknown key or a value of the wrong type raises :class:`ConfigError` naming the full dotted key and the
valid choices.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .schema import Config, ConfigError, Section

BASE_KEY = "_base_"


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and its ``_base_`` chain into one raw dict (no schema check yet)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"circular _base_ inheritance: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = _deep_merge(merged, read_config_tree(path.parent / base, (*_seen, path)))
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); the value is parsed as YAML (lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_dotted(tree: dict, parts: list[str], value: Any) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping (section), got {value!r}")
        return build_section(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return value
        raise ConfigError(f"config key '{key}' got {value!r}; valid choices: {', '.join(map(repr, choices))}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' got {value!r}; expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list ({_type_name(tp)}), got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list ({_type_name(tp)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' must have {len(args)} items ({_type_name(tp)}), got {value!r}"
            )
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if args:
            key_tp, value_tp = args
            items = value.items()
            return {_coerce(k, key_tp, f"{key}.<key>"): _coerce(v, value_tp, f"{key}.{k}") for k, v in items}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported schema type {tp!r}")  # a schema bug, not a user one


def build_section(cls: type[Section], values: Mapping, prefix: str = "") -> Section:
    """Instantiate schema section ``cls`` from a raw mapping, checking every key and type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise ConfigError(f"unknown config key '{dotted}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    section = cls(**kwargs)
    section.validate(prefix)
    return section


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config, apply its ``_base_`` chain and dotted ``KEY=VALUE`` overrides, and validate.

    Returns a :class:`~video_attn.config.schema.Config` with attribute and item access
    (``cfg.train.lr == cfg["train"]["lr"] == cfg["train.lr"]``).
    """
    tree = read_config_tree(path)
    for text in overrides:
        parts, value = parse_override(text)
        _set_dotted(tree, parts, value)
    return build_section(Config, tree)


def config_from_dict(tree: Mapping, overrides: Iterable[str] = ()) -> Config:
    """Rebuild a validated config from ``Config.to_dict()`` output (e.g. stored in a checkpoint), with
    dotted ``KEY=VALUE`` overrides applied (``tree`` itself is left unchanged)."""
    tree = copy.deepcopy(dict(tree))
    for text in overrides:
        parts, value = parse_override(text)
        _set_dotted(tree, parts, value)
    return build_section(Config, tree)
