"""The `report.md` a person reads after `tunesmith export --format gguf`."""

from __future__ import annotations

from pathlib import Path


def _cell(text: str, limit: int = 60, keep_end: bool = False) -> str:
    """A table cell: newlines and pipes escaped; long text keeps its start (or its end)."""
    text = text.replace("\n", "\\n").replace("|", "\\|")
    if len(text) <= limit:
        return text
    return "…" + text[-limit:] if keep_end else text[:limit] + "…"


def _noise_lines(quant: str, ref: dict, n: dict) -> list[str]:
    """The float file's exact checks, then this quant type's noise against it (llama.cpp's statistics)."""
    from .gguf_noise import PUBLISHED_KLD, PUBLISHED_SAME_TOP

    pub_kld, pub_top = PUBLISHED_KLD.get(quant), PUBLISHED_SAME_TOP.get(quant)
    same = min(g["same_prefix"] for g in ref["greedy"]) if ref["greedy"] else 0
    return [
        "",
        f"## The conversion, judged on the {ref['quant']} file this {quant} file was quantized from",
        "",
        f"- {'PASSED' if not ref['failures'] else 'FAILED'}: tokenizer "
        f"{'identical' if not ref['tokenizer_mismatches'] else 'differs'}, greedy tokens identical to transformers "
        f"for the first {same}+ tokens of every prompt (or parted at a near-tie), perplexity "
        f"{ref['ppl_gguf']:.4f} vs {ref['ppl_hf']:.4f}, top-1 agreement {100 * ref['top1_agreement']:.2f}%",
        "",
        f"## {quant} quantization noise against llama.cpp's {ref['quant']} file (reported, not a failure)",
        "",
        "Measured like llama.cpp's `perplexity --kl-divergence`, on the same held-out positions; llama.cpp's "
        "published numbers are for LLaMA 3 8B (small models quantize worse).",
        "",
        "| statistic | this file | llama.cpp, LLaMA 3 8B |",
        "|---|---|---|",
        f"| mean KLD (nats) | {n['mean_kld']:.5f} (fails above {n['max_mean_kld']:.3f}) | "
        f"{pub_kld if pub_kld is not None else 'n/a'} |",
        f"| 99% KLD / max KLD | {n['kld_99']:.4f} / {n['max_kld']:.4f} | |",
        f"| same top token | {100 * n['same_top_p']:.2f}% | {f'{100 * pub_top:.2f}%' if pub_top else 'n/a'} |",
        f"| mean / RMS Δp | {100 * n['mean_dp']:+.3f}% / {100 * n['rms_dp']:.3f}% | |",
        f"| ln(PPL(Q)/PPL(float)) | {n['ln_ppl_ratio']:+.5f} | |",
        f"| positions | {n['positions']} | |",
    ]


def report_text(result, model_dir: Path) -> str:
    v = result.verification
    status = "not verified (--no-verify)" if v is None else ("PASSED" if v["passed"] else "FAILED")
    lines = [
        f"# GGUF export: {result.gguf.name}",
        "",
        f"- source: `{model_dir}`",
        f"- type: **{result.quant}**, {result.size_bytes:,} bytes ({result.size_bytes / 2**20:.2f} MiB)",
        "- tensors by stored type: " + ", ".join(f"{k} x{n}" for k, n in sorted(result.tensor_types.items())),
        f"- Ollama: `ollama create NAME -f {result.modelfile.name}` (in this directory)",
        f"- llama.cpp: `llama-cli -m {result.gguf.name} -cnv` (chat template, BOS and stop tokens come from the file)",
        f"- verification in llama.cpp: **{status}**",
    ]
    if result.fallbacks:
        lines += ["", "Tensors kept at a wider type because their rows do not split into whole blocks:", ""]
        lines += [f"- {f}" for f in result.fallbacks]
    if v is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Verification",
        "",
        "| check | result |",
        "|---|---|",
        f"| tokenizer (llama.cpp ids == transformers ids on probe texts) | "
        f"{'identical' if not v['tokenizer_mismatches'] else str(len(v['tokenizer_mismatches'])) + ' mismatches'} |",
        f"| chat template carried and rendered identically | {v['template_problem'] or 'identical'} |",
        f"| perplexity, transformers fp32 | {v['ppl_hf']:.4f} |",
        f"| perplexity, llama.cpp {result.quant} | {v['ppl_gguf']:.4f} ({100 * v['ppl_increase']:+.2f}%, "
        f"allowed +{100 * v['max_ppl_increase']:.1f}%) |",
        f"| top-1 next-token agreement ({v['eval_tokens']} held-out tokens) | {100 * v['top1_agreement']:.1f}% |",
        "",
        "Greedy decode, transformers vs llama.cpp (token ids in the .verify.json):",
        "",
        "| prompt | identical prefix | transformers | llama.cpp |",
        "|---|---|---|---|",
    ]
    for g in v["greedy"]:
        parted = f" (parts at a gap of {g['margin']:.3f} logits)" if g["same_prefix"] < len(g["hf"]) else ""
        lines.append(f"| `{_cell(g['prompt'], 45, keep_end=True)}` | {g['same_prefix']}/{len(g['hf'])}{parted} | `{_cell(g['hf_text'])}` | "
                     f"`{_cell(g['gguf_text'])}` |")
    if v.get("reference") is not None:
        lines += _noise_lines(result.quant, v["reference"], v["noise"])
    if v["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in v["failures"]]
    return "\n".join(lines) + "\n"
