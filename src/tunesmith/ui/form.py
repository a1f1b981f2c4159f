"""The start-a-run form: its fields come from the run config's own pydantic schema (type, choices,
default and description of each dotted key in FORM_KEYS), what the user typed becomes a config
dict, and a validation error is put beside the field it names.

Only values that differ from the schema's default go into the config (a field left as shown is not
written), so the saved YAML says what the user chose, and options that belong to another adapter
type or method are not set by merely being on the form.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from ..config import RunConfig
from ..config.loading import _describe, _is_branch_tag, merge_dicts

FORM_KEYS = [
    "model.path", "method", "data.train", "data.eval", "data.format", "data.max_length", "data.packing",
    "adapter.type", "adapter.r", "adapter.alpha", "adapter.target_modules", "model.quantization",
    "train.lr", "train.max_steps", "train.epochs", "train.micro_batch_size", "train.grad_accum_steps",
    "train.precision", "train.scheduler", "train.warmup_steps", "train.save_every", "train.eval_every",
    "train.log_every", "train.seed",
]
NAME_FIELD, EXTRA_FIELD, FORM_LEVEL = "name", "extra_yaml", "_form"  # fields that are not config keys
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_BACKTICKED = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)*)")


def _field(dotted: str):
    model: type[BaseModel] = RunConfig
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return model.model_fields[leaf]


def _kind(annotation) -> tuple[str, list | None]:
    """(input kind, choices): select for a Literal, list for list[str] (one per line), text for str|list."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "select", list(typing.get_args(annotation))
    if annotation is bool:
        return "bool", None
    if annotation in (int, float):
        return ("int" if annotation is int else "float"), None
    if origin is list:
        return "list", None
    if origin in (typing.Union, types.UnionType):  # str | list[str] (adapter.target_modules): a preset or names
        return "text_or_list", None
    return "text", None


def form_fields() -> list[dict]:
    out = []
    for key in FORM_KEYS:
        f = _field(key)
        kind, choices = _kind(f.annotation)
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        out.append({"key": key, "kind": kind, "choices": choices, "default": default, "required": f.is_required(),
                    "help": f.description or ""})
    return out


def _parse(kind: str, text: Any) -> Any:
    """The form's string -> the value for the config; left as typed when it does not parse (pydantic says why)."""
    if kind == "bool":
        return text if isinstance(text, bool) else str(text).lower() in ("true", "1", "on", "yes")
    text = str(text).strip()
    if kind == "int":
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else text
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "list" or (kind == "text_or_list" and ("\n" in text or "," in text)):
        return [p.strip() for p in re.split(r"[\n,]", text) if p.strip()]
    return text


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def form_to_config(values: dict[str, Any], output_dir: str) -> tuple[dict, dict[str, str]]:
    """(config dict, errors by field) from the submitted form; errors here are the ones found before pydantic."""
    raw: dict = {}
    errors: dict[str, str] = {}
    for spec in form_fields():
        key = spec["key"]
        if key not in values or (values[key] == "" and spec["kind"] != "bool"):
            continue
        value = _parse(spec["kind"], values[key])
        if value != spec["default"] or spec["required"]:
            _set(raw, key, value)
    extra_text = str(values.get(EXTRA_FIELD) or "").strip()
    if extra_text:
        try:
            extra = yaml.safe_load(extra_text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            errors[EXTRA_FIELD] = f"not valid YAML{f' (line {mark.line + 1})' if mark else ''}: {getattr(e, 'problem', e)}"
            extra = None
        if extra is not None and not isinstance(extra, dict):
            errors[EXTRA_FIELD] = "must be a mapping of sections, e.g. `preference: {beta: 0.1}`"
        elif isinstance(extra, dict):
            if "output_dir" in extra:
                errors[EXTRA_FIELD] = "`output_dir` is set by the run name; remove it here"
            raw = merge_dicts(extra, raw)  # the form's fields win over the same keys in the YAML box
    raw["output_dir"] = output_dir
    return raw, errors


def field_for(loc_key: str, message: str) -> str:
    """The form field an error belongs beside: the key itself; else a form key the message names in
    backticks (a section's check names the key it is about: "`adapter.r` applies to ..."); else the
    nearest form key under or above it; else the extra-YAML box (a key only it can set); else the form."""
    named = _BACKTICKED.findall(message)
    for key in [loc_key, *named]:
        if key in FORM_KEYS:
            return key
    for key in [k for k in [loc_key, *named] if k]:
        for form_key in FORM_KEYS:
            if form_key.startswith(key + ".") or key.startswith(form_key + "."):
                return form_key
    return EXTRA_FIELD if loc_key or named else FORM_LEVEL


def validate(raw: dict) -> tuple[RunConfig | None, dict[str, str]]:
    """Validate with the same schema `tunesmith train` uses; errors keyed by form field."""
    try:
        return RunConfig.model_validate(raw), {}
    except ValidationError as e:
        errors: dict[str, str] = {}
        for err in e.errors():
            loc = [p for p in err["loc"] if isinstance(p, int) or not _is_branch_tag(str(p))]
            loc_key = ".".join(str(p) for p in loc if not isinstance(p, int))
            text = _describe(err, RunConfig)
            field = field_for(loc_key, text)
            errors[field] = f"{errors[field]}; {text}" if field in errors else text
        return None, errors


def check_name(name: str) -> str | None:
    if not name:
        return "give the run a name: it becomes its directory under --runs"
    if not NAME_RE.match(name):
        return "letters, digits, '.', '_' and '-' only (at most 80), starting with a letter or digit"
    return None
