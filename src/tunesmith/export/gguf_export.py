"""`tunesmith export --format gguf`: write, quantize, verify, and describe one GGUF file.

Order matters: everything is checked before any work (a typo costs nothing); the GGUF is built
under a hidden temporary name beside `out`, verified in llama.cpp there, and only a file that
passed is renamed into place. A failed verification raises with its report written beside the
would-be output, so the person sees why; nothing half-checked ever carries the output's name.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .gguf_quant import check_quant, quantize_with_llama_cpp, require_llama_cpp
from .gguf_write import DIRECT_TYPES, WriteResult, read_hf_config, write_gguf

# Types that store the weights as floats: the export is the conversion itself, judged exactly.
FLOAT_TYPES = ("F32", "F16", "BF16")


class VerificationError(UserError):
    """The exported file does not behave like the model it came from in llama.cpp."""


@dataclass
class ExportResult:
    gguf: Path
    modelfile: Path
    report: Path
    quant: str
    size_bytes: int
    tensor_types: dict[str, int]
    fallbacks: list[str] = field(default_factory=list)
    verification: dict | None = None

    def summary(self) -> str:
        lines = [f"wrote {self.gguf} ({self.size_bytes / 2**20:.2f} MiB, {self.quant}; tensor types "
                 + ", ".join(f"{k} x{v}" for k, v in sorted(self.tensor_types.items())) + ")",
                 f"wrote {self.modelfile} (ollama create NAME -f {self.modelfile})",
                 f"wrote {self.report}"]
        v = self.verification
        if v is None:
            lines.append("verification: SKIPPED (--no-verify)")
        else:
            exact = v["reference"] or v
            lines.append(f"verification in llama.cpp: PASSED (tokenizer and chat template identical; {exact['quant']} "
                         f"greedy tokens identical to transformers for the first "
                         f"{min(g['same_prefix'] for g in exact['greedy'])}+ tokens of every prompt or parted at a "
                         f"near-tie, top-1 agreement {100 * exact['top1_agreement']:.1f}%; {self.quant} perplexity "
                         f"{v['ppl_gguf']:.3f} vs {v['ppl_hf']:.3f} ({100 * v['ppl_increase']:+.2f}%))")
            if (n := v["noise"]) is not None:
                lines.append(f"{self.quant} noise vs llama.cpp's {exact['quant']} of the same model (reported, "
                             f"expected for the type): mean KLD {n['mean_kld']:.5f} nats (fails above "
                             f"{n['max_mean_kld']:.3f}), same top token {100 * n['same_top_p']:.2f}%, "
                             f"RMS dp {100 * n['rms_dp']:.2f}%")
        return "\n".join(lines)


def side_paths(out: Path) -> tuple[Path, Path, Path]:
    """The Ollama Modelfile, the report and the verification record written beside `out`."""
    stem = out.name[: -len(".gguf")]
    return out.with_name(f"{stem}.Modelfile"), out.with_name(f"{stem}.report.md"), out.with_name(f"{stem}.verify.json")


def _check_args(model: Path, out: Path, quant: str, overwrite: bool, verify: bool) -> str:
    quant = check_quant(quant)
    if not model.is_dir():
        raise UserError(f"--model {model} is not a directory (expected a merged transformers model directory)")
    read_hf_config(model)
    if out.suffix != ".gguf":
        raise UserError(f"--out {out} should end in .gguf (the Modelfile and report are written beside it)")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'model.gguf'}")
    for p in (out, *side_paths(out)):
        if p.exists() and not overwrite:
            raise UserError(f"{p} already exists; pass --overwrite to replace it or choose another --out")
    if verify or quant not in DIRECT_TYPES:
        require_llama_cpp("verification" if verify else f"--quant {quant}")
    return quant


def _intermediate_type(model_dir: Path) -> str:
    """The narrowest type that holds the checkpoint's weights exactly: llama.cpp quantizes from it."""
    config = read_hf_config(model_dir)
    dtype = config.get("torch_dtype") or config.get("dtype")
    return {"bfloat16": "BF16", "float16": "F16"}.get(str(dtype), "F32")


def _tmp(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _tmp(path, "tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def tensor_types(path: Path) -> dict[str, int]:
    import gguf

    reader = gguf.GGUFReader(path)
    return dict(Counter(t.tensor_type.name for t in reader.tensors))


def eval_windows(tokenizer, eval_file: Path | None, window: int = 128, max_windows: int = 8) -> list[list[int]]:
    """Held-out text cut into windows of token ids, each starting with BOS when the tokenizer adds one."""
    if eval_file is not None:
        try:
            text = Path(eval_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--eval-file {eval_file}: cannot read it as UTF-8 text ({e})") from None
    else:
        from ..models.corpus import builtin_corpus

        text = "\n".join(builtin_corpus(n_docs=200, seed=8_2026))  # a seed no training run uses
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id] else []
    step = window - len(bos)
    windows = [bos + ids[i:i + step] for i in range(0, len(ids) - 1, step)][:max_windows]
    windows = [w for w in windows if len(w) > 2]
    if not windows:
        raise UserError(f"--eval-file {eval_file}: too little text to measure perplexity (need a few dozen tokens)")
    return windows


def _build(model: Path, tokenizer, quant: str, tmp: Path, name: str, source: Path | None) -> WriteResult:
    """Write `tmp` as `quant`. llama.cpp's quantizer and the verification of a quantized type need the
    float file `source` (the checkpoint's own precision), written first; the caller deletes it."""
    if source is not None:
        written = write_gguf(model, tokenizer, source, _intermediate_type(model), name)
    if quant in DIRECT_TYPES:
        return write_gguf(model, tokenizer, tmp, quant, name)
    quantize_with_llama_cpp(source, tmp, quant)
    return WriteResult(tmp, written.n_tensors)


def export_gguf(model: str | Path, out: str | Path, quant: str = "Q4_K_M", overwrite: bool = False,
                verify: bool = True, eval_file: str | Path | None = None,
                max_ppl_increase: float | None = None, match_tokens: int = 8, name: str | None = None) -> ExportResult:
    """Export the transformers model directory `model` as the GGUF file `out`, verify it in llama.cpp,
    and write `<stem>.Modelfile` (Ollama) and `<stem>.report.md` beside it."""
    from ..models.loading import load_tokenizer
    from .gguf_modelfile import modelfile_text
    from .gguf_report import report_text

    model, out = Path(model), Path(out)
    quant = _check_args(model, out, quant, overwrite, verify)
    tokenizer = load_tokenizer(str(model))
    windows = eval_windows(tokenizer, Path(eval_file) if eval_file else None) if verify else []
    modelfile, report, record = side_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(out, "tmp")
    needs_source = quant not in DIRECT_TYPES or (verify and quant not in FLOAT_TYPES)
    source = _tmp(tmp, "src") if needs_source else None
    try:
        written = _build(model, tokenizer, quant, tmp, name or model.name, source)
        result = ExportResult(out, modelfile, report, quant, tmp.stat().st_size, tensor_types(tmp), written.fallbacks)
        if verify:
            result.verification = _verify(model, tokenizer, tmp, quant, windows, max_ppl_increase, match_tokens,
                                          source)
        text = report_text(result, model)
        if result.verification is not None and not result.verification["passed"]:
            _write_text_atomic(report, text)
            raise VerificationError(f"{out} failed verification in llama.cpp and was not written: "
                                    + "; ".join(result.verification["failures"]) + f" (details: {report})")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        if source is not None:
            source.unlink(missing_ok=True)
    _write_text_atomic(modelfile, modelfile_text(out.name, tokenizer))
    _write_text_atomic(report, text)
    if result.verification is not None:
        _write_text_atomic(record, json.dumps(result.verification, indent=1))
    return result


def _verify(model_dir: Path, tokenizer, path: Path, quant: str, windows, max_ppl_increase, match_tokens,
            source: Path | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from .gguf_verify import verify

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    return verify(path, hf, tokenizer, quant, windows, match_tokens=match_tokens, max_ppl_increase=max_ppl_increase,
                  reference=source, reference_type=_intermediate_type(model_dir)).to_dict()
