"""GGUF quantization types and llama.cpp's own quantizer (`llama_model_quantize`).

F32/F16/BF16/Q8_0 are written directly by `gguf` (its Q8_0 is bit-identical to llama.cpp's
reference). Every other type, the K-quants above all, goes through llama.cpp's quantizer, which
picks per-tensor types ("_M" mixes keep attn_v / ffn_down at higher precision) and falls back to
a legal type for rows that do not split into 256-wide super-blocks. Reimplementing that would be a
second, drifting copy of llama.cpp; the `llama-cpp-python` package exposes the real one.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from ..errors import UserError

# Name -> llama.cpp's `enum llama_ftype` value (include/llama.h).
LLAMA_FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32,
}
QUANT_TYPES = tuple(LLAMA_FTYPES)
# Types whose greedy decode must equal the transformers model's token for token.
LOSSLESS_ENOUGH = ("F32", "F16", "BF16", "Q8_0")

INSTALL_HINT = ("install llama.cpp's Python bindings: pip install 'tunesmith[gguf]' "
                "(builds llama.cpp from source: cmake and a C++ compiler, ~10-20 min on 2 cores)")


def check_quant(quant: str) -> str:
    q = quant.upper()
    if q not in LLAMA_FTYPES:
        raise UserError(f"--quant {quant!r} is not a GGUF type tunesmith writes; choose one of {', '.join(QUANT_TYPES)}")
    return q


def llama_cpp_module():
    """`llama_cpp`, or None when the bindings are not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp


def require_llama_cpp(why: str):
    mod = llama_cpp_module()
    if mod is None:
        raise UserError(f"{why} needs llama.cpp; {INSTALL_HINT}")
    return mod


def quantize_with_llama_cpp(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """Quantize the GGUF `src` to `dst` as `quant` with llama.cpp's quantizer."""
    llama_cpp = require_llama_cpp(f"--quant {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[quant]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {quant} (return code {rc})")
