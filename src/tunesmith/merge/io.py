"""Reading inputs for merge and quantize: checked model and adapter directories, and the
verification error every stage raises when what it wrote does not check out. Outputs are claimed
and written through tunesmith.io."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..adapters import require_not_adapter
from ..errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


class VerificationError(UserError):
    """What a stage wrote does not behave like what it was made from; the output is not kept."""


def check_model_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    require_not_adapter(p, what)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise UserError(f"{what} {p} is not a model directory (expected config.json inside)")
    if not any(p.glob("*.safetensors")):
        hint = " (it has pickled *.bin weights; tunesmith reads safetensors only)" if any(p.glob("*.bin")) else ""
        raise UserError(f"{what} {p} has no *.safetensors weights{hint}")
    return p


def check_adapter_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not (p / "adapter_config.json").is_file():
        raise UserError(f"--adapter {p} is not a PEFT adapter directory (expected adapter_config.json inside)")
    if not (p / "adapter_model.safetensors").is_file():
        raise UserError(f"--adapter {p} has no adapter_model.safetensors (tunesmith reads safetensors only)")
    return p


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read JSON ({e})") from None


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
