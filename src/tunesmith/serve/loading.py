"""What `--model` and `--adapter` point at, resolved to a base model directory and named adapters.

`--model` may be a transformers model directory, a run directory (its `model/` after a full
fine-tune, or its `adapter/` on the base named in adapter_config.json), a run config (its
`output_dir`), an adapter directory itself, or a `.gguf` file (served through llama.cpp).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass
class Target:
    base: Path | None  # transformers model directory (None for a .gguf)
    gguf: Path | None = None
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> adapter directory
    name: str = ""  # the base model's name in /v1/models


def adapter_dir(path: str | Path, what: str) -> Path:
    """An adapter directory, or a run directory holding one in adapter/."""
    p = Path(path).expanduser()
    if (p / "adapter" / "adapter_config.json").is_file():
        p = p / "adapter"
    if not (p / "adapter_config.json").is_file():
        raise UserError(f"{what} {path} is neither a PEFT adapter directory nor a run directory with adapter/ "
                        "(expected adapter_config.json)")
    return p.resolve()


def adapter_base(adapter: Path, what: str) -> Path:
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{what}: cannot read {adapter}/adapter_config.json ({e})") from None
    if not base or not (Path(base) / "config.json").is_file():
        raise UserError(f"{what}: {adapter}/adapter_config.json names base model {base!r}, which is not a local model "
                        "directory; pass the base with --model and this adapter with --adapter NAME=DIR")
    return Path(base).resolve()


def resolve_model(model: str | Path) -> Target:
    p = Path(model).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"--model {model}: no such GGUF file")
        return Target(base=None, gguf=p.resolve(), name=p.stem)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        from ..config import load_config

        p = Path(load_config(p).output_dir)
    if not p.exists():
        raise UserError(f"--model {model} does not exist (expected a model directory, a run directory or config, or a .gguf file)")
    if (p / "model" / "config.json").is_file():
        return Target(base=(p / "model").resolve(), name=p.resolve().name)
    if (p / "adapter" / "adapter_config.json").is_file() or (p / "adapter_config.json").is_file():
        a = adapter_dir(p, "--model")
        name = (p if a.name == "adapter" and a.parent == p.resolve() else a).resolve().name
        base = adapter_base(a, "--model")
        return Target(base=base, adapters={name: a}, name=base.name)
    if (p / "config.json").is_file():
        return Target(base=p.resolve(), name=p.resolve().name)
    raise UserError(f"--model {model} holds no model: expected config.json, model/, adapter/ or adapter_config.json")


def parse_adapter_args(items: list[str] | None) -> dict[str, Path]:
    """`--adapter NAME=DIR` (or a bare DIR, named after its directory) -> {name: adapter dir}."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            p = adapter_dir(path, "--adapter")
            name = p.parent.name if p.name == "adapter" else p.name
        p = adapter_dir(path, f"--adapter {item}")
        if not name or name in out:
            raise UserError(f"--adapter {item}: the name {name!r} is empty or given twice; use --adapter NAME=DIR")
        out[name] = p
    return out
