"""`model:` — which base model, how it is stored and loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Dtype, _Section, bf16_available


class ModelConfig(_Section):
    path: str = Field(description="Local directory or hub id (org/name) of a causal LM.")
    dtype: Dtype = Field(
        "auto",
        description="Storage dtype of the frozen weights. auto: bf16 on a GPU that supports it, else fp32. "
        "Trainable parameters are always kept in fp32 (master weights).",
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none", description="Load the base through bitsandbytes: int8 (LLM.int8) or nf4 (QLoRA)."
    )
    double_quant: bool = Field(True, description="NF4 only: quantize the absmax constants too (QLoRA).")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")

    def storage_dtype(self, precision: str, bf16_ok: bool | None = None) -> Literal["fp32", "bf16", "fp16"]:
        """`dtype` with `auto` resolved for a run computing in `precision` (already resolved)."""
        if self.dtype != "auto":
            return self.dtype
        if precision == "fp32":
            # fp32 compute asked for on a bf16-capable GPU: bf16 frozen weights would feed bf16 activations
            # into fp32 trainable modules (a reward head, LoRA) with no autocast to reconcile them.
            return "fp32"
        return "bf16" if (bf16_available() if bf16_ok is None else bf16_ok) else "fp32"
