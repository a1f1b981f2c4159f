"""Save and load adapters of any type, and the sidecar that says what a saved adapter needs.

PEFT adapters are saved in PEFT's own format, so `PeftModel.from_pretrained`, vLLM and TGI load what
we write; bottleneck adapters (which PEFT lacks) save into the same `adapter/` layout. Next to either,
`tunesmith_adapter.json` records what the weights alone do not say: the adapter type, the task type
(a reward model's score head) and the quantization of the base it was trained on. A QLoRA adapter
merged or evaluated on a full-precision base is a different model (PITFALLS 15), and the adapter
directory is what users copy around, so this lives in the adapter directory, not in the run around it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from ..errors import UserError
from .registry import get_spec, spec_of_peft

SIDECAR = "tunesmith_adapter.json"
BOTTLENECK_CONFIG = "bottleneck.json"


def base_quantization(model) -> tuple[str, bool]:
    """(quantization, double_quant) of the bitsandbytes base under `model` (PEFT-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    q = getattr(base.config, "quantization_config", None)
    if q is None:
        return "none", True
    q = q if isinstance(q, dict) else q.to_dict()
    if q.get("load_in_4bit"):
        return str(q.get("bnb_4bit_quant_type", "nf4")), bool(q.get("bnb_4bit_use_double_quant", False))
    if q.get("load_in_8bit"):
        return "int8", True
    raise UserError(f"the base model is quantized with {q.get('quant_method', q)}, which tunesmith does not train on")


def _task_type(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # The class, not config.architectures: that still names the checkpoint's class (a causal LM loaded with a new head).
    return "SEQ_CLS" if type(base).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save_adapter(model, out_dir: Path, full_state: dict | None = None) -> None:
    """The adapter in its own format plus the sidecar. `full_state`: the gathered state dict of an
    FSDP-sharded model (its own parameters are one rank's shards)."""
    from .bottleneck import is_bottleneck_model, save_bottleneck

    out_dir = Path(out_dir)
    if is_bottleneck_model(model):
        if full_state:
            raise UserError("`train.fsdp` is not supported with `adapter.type: adapter` (bottleneck); use DDP")
        save_bottleneck(model, out_dir)
        adapter_type = "adapter"
    else:
        model.save_pretrained(out_dir, safe_serialization=True, **({"state_dict": full_state} if full_state else {}))
        adapter_type = _type_from_peft(out_dir)
    quant, double_quant = base_quantization(model)
    _write_json(out_dir / SIDECAR, {"adapter_type": adapter_type, "task_type": _task_type(model),
                                    "base_quantization": quant, "double_quant": double_quant})


def read_sidecar(adapter_dir: Path) -> dict:
    p = Path(adapter_dir) / SIDECAR
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: invalid JSON ({e}); restore it from the run, or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object")
    return data


def _type_from_peft(adapter_dir: Path) -> str:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    spec = spec_of_peft(cfg.get("peft_type", ""), bool(cfg.get("use_dora")))
    if spec is None:
        raise UserError(f"{adapter_dir}/adapter_config.json: PEFT type {cfg.get('peft_type')!r} is not one tunesmith trains")
    return spec.name


def adapter_type_of(adapter_dir: str | Path) -> str:
    """The tunesmith adapter type of a saved adapter directory (for `require_mergeable`)."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / BOTTLENECK_CONFIG).is_file():
        return "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir} holds no adapter (neither adapter_config.json nor {BOTTLENECK_CONFIG}); "
                        "point at a run's adapter/ directory")
    return _type_from_peft(adapter_dir)


def adapter_task_type(adapter_dir: str | Path) -> str:
    """CAUSAL_LM, or SEQ_CLS when the adapter carries a trained reward (score) head."""
    adapter_dir = Path(adapter_dir)
    if "task_type" in (side := read_sidecar(adapter_dir)):
        return str(side["task_type"])
    if (adapter_dir / BOTTLENECK_CONFIG).is_file():  # written before the sidecar existed: the head is in modules_to_save
        meta = json.loads((adapter_dir / BOTTLENECK_CONFIG).read_text())
        return "SEQ_CLS" if "score" in meta.get("modules_to_save", []) else "CAUSAL_LM"
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    return str(cfg.get("task_type") or "CAUSAL_LM")


def training_quantization(adapter_dir: str | Path) -> tuple[str, bool] | None:
    """(quantization, double_quant) the adapter was trained with: from its sidecar, else (runs saved
    before the sidecar existed) from the run's config.yaml beside it; None when neither says."""
    adapter_dir = Path(adapter_dir)
    side = read_sidecar(adapter_dir)
    if "base_quantization" in side:
        return str(side["base_quantization"]), bool(side.get("double_quant", True))
    cfg_path = adapter_dir.parent / "config.yaml"
    if not cfg_path.is_file():
        return None
    try:
        model_cfg = (yaml.safe_load(cfg_path.read_text()) or {}).get("model")
    except (yaml.YAMLError, AttributeError):
        return None
    if not isinstance(model_cfg, dict):
        return None
    return str(model_cfg.get("quantization", "none")), bool(model_cfg.get("double_quant", True))


def unknown_quantization(adapter_dir: Path, fix: str) -> UserError:
    return UserError(f"{adapter_dir} does not say which quantization its base had in training (no {SIDECAR} in it, "
                     f"no run config.yaml beside it), and a QLoRA adapter on a full-precision base (or the reverse) is "
                     f"a different model; {fix}")


def short_load_error(e: Exception) -> str:
    """The first line of a load error and a count of the rest: a base of the wrong size makes torch
    list every mismatched tensor (28 lines on a 2-layer model), and the first says what happened."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) <= 3:
        return " ".join(ln.strip() for ln in lines)
    mismatches = sum(1 for ln in lines if re.search(r"size mismatch", ln))
    rest = f"{mismatches} tensors have a different shape" if mismatches else f"{len(lines) - 1} more lines"
    return f"{lines[0].strip()} ... ({rest}, e.g. {lines[1].strip()})"


def require_not_adapter(path: Path, what: str) -> None:
    """Refuse an adapter (or a run holding one) where a full model is needed, saying to merge it first."""
    for p in (path, path / "adapter"):
        if (p / "adapter_config.json").is_file() or (p / BOTTLENECK_CONFIG).is_file():
            raise UserError(f"{what} {path} is an adapter, not a full model; run `tunesmith merge --base BASE --adapter "
                            f"{p} --out merged/` first and pass merged/ (prefix/prompt/bottleneck adapters cannot be "
                            "merged: train lora/dora/ia3 or full fine-tuning to export)")


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Put the adapter saved in `adapter_dir` (any type) on top of `model`, for inference by default."""
    adapter_dir = Path(adapter_dir)
    spec = get_spec(adapter_type_of(adapter_dir))
    try:
        if not spec.is_peft:
            from .bottleneck import load_bottleneck

            return load_bottleneck(model, adapter_dir, trainable=trainable)
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"could not load the adapter {adapter_dir} onto this base (was it trained on this base?): "
                        f"{short_load_error(e)}") from None
