"""Reading a config: YAML file + dotted command-line overrides -> a validated section, or a
`ConfigError` whose message names the key, what was wrong and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .run import RunConfig


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "data.train=[a.jsonl,b.jsonl]"]` -> nested dict; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(f"override `{item}` is not of the form key.sub=value (e.g. train.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override `{item}`: `{p}` is already set to a value, not a section")
        node[parts[-1]] = value
    return tree


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, section by section (overrides over a YAML file); neither is modified."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_merge = merge_dicts  # the old private name, still imported by code written before merge_dicts


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _is_branch_tag(part: str) -> bool:
    return "[" in part or part in ("str", "int", "float", "bool", "dict", "list", "function-after", "function-before")


def _describe(err: dict, schema: type[BaseModel]) -> str:
    # List indices stay in the key (`data.train.1`), but pydantic's union-branch tags
    # (`function-after[...]`, `str`, `list[str]`) are not config keys and are left out.
    loc = tuple(p for p in err["loc"] if isinstance(p, int) or not _is_branch_tag(str(p)))
    key = ".".join(str(p) for p in loc) if loc else "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(schema, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean `{'.'.join(map(str, loc[:-1] + (close[0],)))}`?" if close else f"known keys here: {', '.join(known)}"
        return f"`{key}` is not a config key; {hint}"
    if kind == "missing":
        return f"`{key}` is required; add it to the config (or pass {key}=...)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg if not loc else f"`{key}`: {msg}"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"`{key}` = {shown}: {msg}"


def validate_config(raw: dict[str, Any], schema: type[BaseModel] = RunConfig, source: str = "config") -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, schema) for err in e.errors()]
        raise ConfigError(f"{source}: invalid config\n  - " + "\n  - ".join(lines)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model:, data:, train:, ...)")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, schema: type[BaseModel] = RunConfig) -> Any:
    """Read YAML (optional), apply dotted overrides, validate. Raises ConfigError naming the key."""
    raw = read_yaml(path) if path else {}
    raw = merge_dicts(raw, parse_overrides(overrides or []))
    return validate_config(raw, schema, source=str(path) if path else "command line")
