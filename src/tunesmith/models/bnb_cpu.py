"""One 4-bit CPU code path on every machine.

On a CPU with AVX512-BF16, bitsandbytes (0.49+) repacks a `Linear4bit` weight into a blocked layout the
first time the layer runs in inference (eval mode, no grad) and from then on multiplies in bf16. Two
problems follow, both machine-dependent (a CPU without AVX512-BF16 never takes that path):
- the layout needs the output size to be a multiple of 32 and each row to hold whole quantization
  blocks; other layers (a small GQA model's k/v projections, a tiny test model) crash with
  "N must be divisible by block_n" or "shape '[64, 2]' is invalid";
- the bf16 product differs from what training computed (training mode always dequantizes and
  multiplies in the compute dtype), by ~3e-3 in the logits of a tiny model: enough to break the
  checks that a merged QLoRA model equals base + adapter, and to make evaluation depend on the CPU.
So every 4-bit layer is told to use the plain dequantize-and-matmul path, as training does.
"""

from __future__ import annotations


def use_portable_cpu_kernel(model) -> int:
    """Turn bitsandbytes' packed AVX512-BF16 inference kernel off in every 4-bit layer; returns how many
    layers had it on (0 on a CPU without AVX512-BF16, and for a model without 4-bit layers)."""
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed
