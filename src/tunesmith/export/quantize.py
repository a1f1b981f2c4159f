"""`tunesmith quantize --model DIR --out DIR --method int8|nf4|gptq|awq`.

* int8 / nf4: bitsandbytes quantizes at load time; the checkpoint is saved with its
  `quantization_config`, so `AutoModelForCausalLM.from_pretrained(out)` reloads it 8/4-bit with no
  extra arguments. Verified by reloading it through transformers + bitsandbytes.
* gptq / awq: calibrated here (gptq.py, awq.py) and written in the GPTQ v1 / AutoAWQ GEMM layouts
  with transformers' `quantization_config`, which gptqmodel, optimum and vLLM read. None of those
  readers installs on this CPU stack (gptqmodel needs torch >= 2.14), so the checkpoint is verified
  by `load_quantized`, which unpacks the on-disk tensors the way those readers do: the weights it
  gets must equal the ones the quantizer evaluated, bit for bit.

Every run scores perplexity on held-out text (never the calibration text) for the original and the
reloaded quantized model, and writes report.md. A reload that differs, or a perplexity that is not
finite or worse than `max_ppl_ratio` x the original's, is an error and nothing is kept.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..io import atomic_dir, atomic_write_text, check_output
from ..merge.io import VerificationError, check_model_dir, read_json
from ..models.loading import bnb_config, stored_dtype
from ..merge.verify import logits_on_probes, max_logit_diff, probe_ids
from ..models.bnb_cpu import use_portable_cpu_kernel
from .quantize_data import chunks, default_texts, perplexity, read_texts
from .quantize_pack import pack_awq, pack_gptq, unpack_awq, unpack_gptq

METHODS = ("int8", "nf4", "gptq", "awq")
EVAL_WINDOWS = 64


def _load_fp32(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()


def write_bnb(src: Path, tmp: Path, method: str, probes: torch.Tensor) -> tuple[object, str]:
    """Quantize with bitsandbytes, save, reload with plain from_pretrained; the reload must match."""
    from transformers import AutoModelForCausalLM

    q = AutoModelForCausalLM.from_pretrained(src, dtype=stored_dtype(src), quantization_config=bnb_config(method),
                                             device_map={"": "cpu"}, use_safetensors=True).eval()
    q.save_pretrained(tmp, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp, device_map={"": "cpu"}, dtype=stored_dtype(src)).eval()
    use_portable_cpu_kernel(q)
    use_portable_cpu_kernel(reloaded)
    kind = "Linear4bit" if method == "nf4" else "Linear8bitLt"
    if not any(type(m).__name__ == kind for m in reloaded.modules()):
        raise VerificationError(f"{tmp.name} reloaded without {kind} layers; the quantization config was not saved")
    diff = max_logit_diff(logits_on_probes(reloaded, probes), logits_on_probes(q, probes))
    if diff > 1e-5:
        raise VerificationError(f"the reloaded {method} model's logits differ from the quantized model's by {diff:.3g}")
    return reloaded, f"transformers + bitsandbytes `from_pretrained` ({kind} layers; logits equal to the in-memory model's)"


def _quant_config(method: str, bits: int, group_size: int, act_order: bool) -> dict:
    if method == "gptq":
        return {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": act_order, "sym": True,
                "damp_percent": 0.01, "true_sequential": False, "static_groups": False, "checkpoint_format": "gptq",
                "lm_head": False}
    return {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True, "version": "gemm",
            "modules_to_not_convert": None}


def write_packed(src: Path, tmp: Path, method: str, calib: torch.Tensor, bits: int, group_size: int,
                 act_order: bool) -> tuple[object, str, dict]:
    """Calibrate layer by layer, write the packed checkpoint, reload it with `load_quantized`."""
    from ..merge.models import save_state_dict
    from .quantize_layers import quantize_model_layers

    model = _load_fp32(src)
    results, diag = quantize_model_layers(model, calib, method, bits, group_size, act_order)
    keep = stored_dtype(src)  # embeddings, norms, lm_head: as stored in the source, not the fp32 working copy
    state = {k: (v.to(keep) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    for name, r in results.items():
        del state[f"{name}.weight"]
        packed = (pack_gptq(r["q"], r["zero"], r["scale"], r["g_idx"], bits) if method == "gptq"
                  else pack_awq(r["q"], r["zero"], r["scale"]))
        state.update({f"{name}.{k}": v for k, v in packed.items()})
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_state_dict(state, tmp)
    cfg = dict(read_json(src / "config.json"), quantization_config=_quant_config(method, bits, group_size, act_order))
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    if (src / "generation_config.json").is_file():
        shutil.copy2(src / "generation_config.json", tmp / "generation_config.json")
    reloaded = load_quantized(tmp)
    for name in results:
        got, want = reloaded.get_submodule(name).weight, model.get_submodule(name).weight
        if not torch.equal(got, want):
            raise VerificationError(f"{name}: the weight unpacked from disk differs from the quantizer's by "
                                    f"{(got - want).abs().max().item():.3g}")
    layout = "GPTQ v1 (qweight/qzeros/scales/g_idx)" if method == "gptq" else "AutoAWQ GEMM (qweight/qzeros/scales)"
    return reloaded, (f"{layout} unpacked from disk by tunesmith's reader: all {len(results)} quantized linears equal "
                      "the quantizer's weights bit for bit (gptqmodel/AutoAWQ not installable here: not run)"), diag


def load_quantized(path: str | Path):
    """An fp32 model from a GPTQ/AWQ checkpoint, each packed linear dequantized as the readers do."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    qc = read_json(path / "config.json").get("quantization_config") or {}
    if qc.get("quant_method") not in ("gptq", "awq"):
        raise UserError(f"{path} is not a GPTQ/AWQ checkpoint (quantization_config.quant_method = {qc.get('quant_method')})")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    raw: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        raw.update(load_file(f))
    state = {k: v for k, v in raw.items() if not k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx")}
    for key in [k for k in raw if k.endswith(".qweight")]:
        name = key.removesuffix(".qweight")
        t = {s: raw[f"{name}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx") if f"{name}.{s}" in raw}
        state[f"{name}.weight"] = (unpack_gptq(t, qc["bits"]) if qc["quant_method"] == "gptq"
                                   else unpack_awq(t, qc["group_size"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise VerificationError(f"{path}: missing tensors {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def _check_args(method: str, bits: int, group_size: int, model) -> None:
    if method not in METHODS:
        raise UserError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if method == "gptq" and bits not in (4, 8):
        raise UserError(f"--bits {bits}: GPTQ here writes 4 or 8 bits")
    if method == "awq" and bits != 4:
        raise UserError(f"--bits {bits}: AWQ's GEMM format is 4-bit only; use --bits 4")
    if group_size != -1 and group_size <= 0:
        raise UserError(f"--group-size {group_size}: use a positive number of columns, or -1 for one group per row")
    if method == "awq":
        from .quantize_layers import decoder_layers

        bad = sorted({m.in_features for m in decoder_layers(model).modules() if isinstance(m, torch.nn.Linear)
                      and group_size != -1 and m.in_features % group_size})
        if bad:
            raise UserError(f"--group-size {group_size} does not divide the input sizes {bad} of this model's "
                            "linears (AWQ readers need whole groups); pick a common divisor or -1")


def _texts(calibration, eval_file) -> tuple[list[str], list[str], str]:
    calib_default, eval_default = default_texts()
    calib = read_texts(calibration, "--calibration") if calibration else calib_default
    if eval_file:
        held = read_texts(eval_file, "--eval")
        overlap = set(held) & set(calib)
        if overlap:
            raise UserError(f"--eval {eval_file} shares {len(overlap)} lines with the calibration text; "
                            "perplexity must be measured on held-out text")
        return calib, held, str(eval_file)
    seen = set(calib)
    return calib, [t for t in eval_default if t not in seen], "built-in text (disjoint from calibration)"


def _weights_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def quantize_model(model: str | Path, out: str | Path, method: str, bits: int = 4, group_size: int = 128,
                   act_order: bool = False, calibration: str | Path | None = None, eval_file: str | Path | None = None,
                   samples: int = 128, seq_len: int = 256, overwrite: bool = False, max_ppl_ratio: float = 1.5) -> dict:
    """Quantize `model` to `out` and report perplexity of the reloaded checkpoint vs the original."""
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    if method not in METHODS:  # before any model is loaded
        raise UserError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    src = check_model_dir(model, "--model")
    inputs = [src, calibration, eval_file]
    out = check_output(out, "quantize", overwrite=overwrite, inputs=inputs)
    if samples < 1:
        raise UserError(f"--samples {samples}: use at least 1 calibration sequence")
    tokenizer = AutoTokenizer.from_pretrained(src)
    reference = _load_fp32(src)
    _check_args(method, bits, group_size, reference)
    calib_texts, eval_texts, eval_source = _texts(calibration, eval_file)
    eval_ids = chunks(tokenizer, eval_texts, seq_len, EVAL_WINDOWS)
    ppl_ref = perplexity(reference, eval_ids, desc="perplexity (original)")
    probes = probe_ids(tokenizer)
    diag: dict = {}
    with atomic_dir(out, "quantize", overwrite=overwrite, inputs=inputs) as tmp:
        if method in ("int8", "nf4"):
            reloaded, reader = write_bnb(src, tmp, method, probes)
            n_calib = 0
        else:
            calib_ids = chunks(tokenizer, calib_texts, seq_len, samples)
            n_calib = len(calib_ids)
            reloaded, reader, diag = write_packed(src, tmp, method, calib_ids, bits, group_size, act_order)
        tokenizer.save_pretrained(tmp)
        ppl_q = perplexity(reloaded, eval_ids, desc=f"perplexity ({method})")
        if not ppl_q < max_ppl_ratio * ppl_ref:  # also catches NaN
            raise VerificationError(f"{method} perplexity {ppl_q:.3f} vs {ppl_ref:.3f} unquantized "
                                    f"(> {max_ppl_ratio}x): the quantized model is broken; nothing written")
        summary = {"out": str(out), "model": str(src), "method": method,
                   "bits": 8 if method == "int8" else bits, "group_size": group_size if method in ("gptq", "awq") else None,
                   "act_order": act_order if method == "gptq" else None, "calibration_windows": n_calib,
                   "eval_windows": len(eval_ids), "seq_len": seq_len, "eval_source": eval_source,
                   "ppl_original": ppl_ref, "ppl_quantized": ppl_q, "ppl_delta_pct": 100 * (ppl_q / ppl_ref - 1),
                   "size_original_bytes": _weights_size(src), "size_bytes_weights": _weights_size(tmp), "reader": reader,
                   "awq_loss_vs_rtn": (diag["loss"], diag["rtn_loss"]) if method == "awq" else None,
                   "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_text(tmp / "report.md", _report(summary))
    summary["size_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    summary["verified"] = (f"{reader}; perplexity {ppl_q:.3f} vs {ppl_ref:.3f} unquantized "
                           f"({summary['ppl_delta_pct']:+.2f}%) on {len(eval_ids)} held-out windows")
    return summary


def _report(s: dict) -> str:
    mib = 2**20
    detail = f"{s['bits']}-bit" + (f", group size {s['group_size']}" if s["group_size"] else "")
    if s["act_order"]:
        detail += ", act-order"
    awq = ""
    if s["awq_loss_vs_rtn"]:
        awq = (f"\nAWQ scale search: output error on calibration tokens {s['awq_loss_vs_rtn'][0]:.4g} vs "
               f"{s['awq_loss_vs_rtn'][1]:.4g} for plain round-to-nearest.\n")
    return (f"# Quantized model: {s['method']} ({detail})\n\nFrom `{s['model']}`. Perplexity on {s['eval_windows']} "
            f"held-out windows of {s['seq_len']} tokens ({s['eval_source']}); "
            f"{s['calibration_windows']} calibration windows.\n\n"
            "| model | weights on disk | perplexity | change |\n|---|---|---|---|\n"
            f"| original (fp32 compute) | {s['size_original_bytes'] / mib:.2f} MiB | {s['ppl_original']:.4f} | |\n"
            f"| {s['method']} | {s['size_bytes_weights'] / mib:.2f} MiB | {s['ppl_quantized']:.4f} | "
            f"{s['ppl_delta_pct']:+.2f}% |\n{awq}\nVerified: {s['reader']}.\n")
