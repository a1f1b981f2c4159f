"""`tunesmith merge --base BASE --adapter A [--adapter B --weights 0.7 0.3] --out DIR`.

Folds PEFT adapters into their base and saves a plain `transformers` model (safetensors, tokenizer,
chat template): no PEFT needed to load it. PEFT's `merge_and_unload` does the per-type arithmetic
(LoRA, DoRA, IA3, ...), so every adapter type PEFT knows merges the same way PEFT runs it.

Two things PEFT leaves to the caller, done here:
* A QLoRA adapter was trained against the *dequantized* 4-bit (or 8-bit) weights, not the original
  fp16 ones. Merging it into the originals gives a model the adapter never saw (PEFT #851,
  PITFALLS 15). So the base is quantized exactly as in training (read from the run's config.yaml),
  dequantized to full precision, and the adapter is merged into that.
* Several LoRA adapters merge as W = W0 + sum_i w_i * (alpha_i / r_i) B_i A_i: each adapter's
  scale is multiplied by its weight, then all are merged.

The merge is verified before anything is kept: the merged model's logits must equal the unmerged
adapter model's on probe inputs, and the saved weights must reload bit-for-bit.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from ..errors import UserError
from ..adapters import adapter_type_of, require_mergeable
from .tied import is_tied, touched_embeddings, untie_embeddings
from .io import (DTYPES, VerificationError, atomic_dir, check_adapter_dir, check_model_dir, check_out, dir_size,
                 read_json, write_text_atomic)
from .verify import compare_state_dicts, logits_on_probes, max_logit_diff, probe_ids

QUANTIZATIONS = ("auto", "none", "nf4", "int8")


def training_quantization(adapter_dir: Path) -> tuple[str, bool]:
    """(quantization, double_quant) the adapter was trained with, from the run's config.yaml next to it."""
    cfg_path = adapter_dir.parent / "config.yaml"
    if not cfg_path.is_file():
        return "none", True
    try:
        model_cfg = (yaml.safe_load(cfg_path.read_text()) or {}).get("model", {}) or {}
    except yaml.YAMLError:
        return "none", True
    return str(model_cfg.get("quantization", "none")), bool(model_cfg.get("double_quant", True))


def load_base(base: Path, quantization: str, double_quant: bool = True):
    """The base in fp32; a 4/8-bit base is quantized as in training and then dequantized to fp32."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = dict(dtype=torch.float32, use_safetensors=True)
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    elif quantization == "int8":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if "quantization_config" in kwargs:
        kwargs["device_map"] = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load --base {base}: {e}") from None
    if quantization in ("nf4", "int8"):
        model = model.dequantize(dtype=torch.float32)
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model.eval()


def attach_adapters(model, adapters: list[Path], weights: list[float]):
    """A PeftModel with every adapter active, each LoRA scaled by its weight."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    names = [f"adapter_{i}" for i in range(len(adapters))]
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
        for name, path in zip(names[1:], adapters[1:]):
            peft_model.load_adapter(str(path), adapter_name=name)
    except (ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"could not apply adapter to the base (was it trained on this base?): {e}") from None
    if len(adapters) > 1 or weights[0] != 1.0:
        cfgs = [peft_model.peft_config[n] for n in names]
        bad = [str(a) for a, c in zip(adapters, cfgs) if c.peft_type.value != "LORA" or getattr(c, "use_dora", False)]
        if bad:
            raise UserError(f"weighted merge supports plain LoRA adapters only; {bad} are not (merge them one at a time)")
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                for name, w in zip(names, weights):
                    if name in module.scaling:
                        module.scaling[name] = module.scaling[name] * w
    peft_model.base_model.set_adapter(names)
    return peft_model.eval(), names


def merge_adapter(base: str | Path, adapter: str | Path | list, out: str | Path, weights: list[float] | None = None,
                  base_quantization: str = "auto", dtype: str = "auto", overwrite: bool = False) -> dict:
    """Merge one or more adapters into `base`, verify, and save a plain transformers model to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    base = check_model_dir(base, "--base")
    adapters = [check_adapter_dir(a) for a in (adapter if isinstance(adapter, list) else [adapter])]
    for a in adapters:  # prefix/prompt/P-tuning/bottleneck adapters are not a change of a weight
        require_mergeable(adapter_type_of(a))
    weights = list(weights) if weights else [1.0] * len(adapters)
    if len(weights) != len(adapters):
        raise UserError(f"--weights has {len(weights)} values for {len(adapters)} adapters; give one weight per adapter")
    if base_quantization not in QUANTIZATIONS:
        raise UserError(f"--base-quantization {base_quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    out = check_out(out, overwrite)
    quant, double_quant = (training_quantization(adapters[0]) if base_quantization == "auto"
                           else (base_quantization, True))
    save_dtype = _save_dtype(base, dtype)

    tok_src = adapters[0] if (adapters[0] / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    model = load_base(base, quant, double_quant)
    untied = touched_embeddings(model, adapters) if is_tied(model) else []
    if untied:  # PITFALLS 28: the adapter changed one side of a shared tensor; see merge/tied.py
        untie_embeddings(model)
    peft_model, names = attach_adapters(model, adapters, weights)
    ids = probe_ids(tokenizer)
    reference = logits_on_probes(peft_model, ids)  # (B, T, V): the adapter as it runs, unmerged
    merged = peft_model.merge_and_unload(adapter_names=names)
    diff = max_logit_diff(logits_on_probes(merged, ids), reference)
    tol = 1e-4 * max(1.0, reference.abs().max().item())
    if not diff <= tol:
        raise VerificationError(f"merged model's logits differ from the adapter's by {diff:.3g} (> {tol:.1g}); nothing written")

    merged = merged.to(save_dtype)
    with atomic_dir(out, overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=save_dtype, use_safetensors=True)
        compare_state_dicts(reloaded.state_dict(), merged.state_dict(), "reloaded merged model")
        if (tokenizer.chat_template or None) != (AutoTokenizer.from_pretrained(tmp).chat_template or None):
            raise VerificationError("the saved tokenizer lost the chat template")
        summary = {"out": str(out), "base": str(base), "adapters": [str(a) for a in adapters], "weights": weights,
                   "base_quantization": quant, "dtype": str(save_dtype).removeprefix("torch."),
                   "max_logit_diff": diff, "tolerance": tol, "seconds": round(time.perf_counter() - t0, 2),
                   "untied_embeddings": untied}
        write_text_atomic(tmp / "report.md", _report(summary))
    summary["size_bytes"] = dir_size(out)
    return summary


def _save_dtype(base: Path, dtype: str) -> torch.dtype:
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype!r}: use auto, fp32, bf16 or fp16")
        return DTYPES[dtype]
    cfg = read_json(base / "config.json")
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def _untie_note(s: dict) -> str:
    if not s["untied_embeddings"]:
        return ""
    return (f"The base ties its input and output embeddings; the adapter changed {', '.join(s['untied_embeddings'])}, "
            "so the tie is broken on purpose: the output embedding is saved as its own tensor and config.json "
            "says `tie_word_embeddings: false` (merging into the shared tensor would change both sides).\n\n")


def _report(s: dict) -> str:
    rows = "\n".join(f"| {a} | {w:g} |" for a, w in zip(s["adapters"], s["weights"]))
    return (f"# Merged model\n\nBase `{s['base']}` (as trained: quantization `{s['base_quantization']}`, "
            f"dequantized to fp32 before merging), saved in {s['dtype']}.\n\n| adapter | weight |\n|---|---|\n{rows}\n\n"
            f"Verified: the merged model's logits equal the adapter model's within {s['max_logit_diff']:.2e} "
            f"(tolerance {s['tolerance']:.1e}) on probe inputs; the saved weights reload bit-for-bit; the chat "
            f"template is kept.\n\n{_untie_note(s)}Load it with `AutoModelForCausalLM.from_pretrained(\"{s['out']}\")` — no PEFT needed.\n")
