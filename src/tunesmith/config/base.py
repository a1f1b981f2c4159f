"""Shared pieces of every config section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Dtype = Literal["auto", "fp32", "bf16", "fp16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The public name for other modules' config sections (merge, eval task files); `_Section` stays for old imports.
Section = _Section


def bf16_available() -> bool:
    """Whether `auto` precision/dtype means bf16 here: a CUDA GPU that supports it (CPU bf16 matmuls are slow)."""
    import torch  # only when a derived value is asked for: validating a config stays torch-free

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
