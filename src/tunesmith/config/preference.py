"""`preference:` (formerly `dpo:`) — settings of method reward / dpo / kto."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import _Section


class PreferenceConfig(_Section):
    """`method: reward | dpo | kto` settings (YAML section `preference:`; `dpo:` is a deprecated alias)."""
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "cpo", "orpo"] = Field(
        "sigmoid", description="method: dpo only. sigmoid = DPO; ipo; hinge (SLiC); simpo, cpo, orpo need no reference model.")
    beta: float = Field(0.1, gt=0, description="Strength of the KL constraint (DPO/IPO/hinge/KTO), SimPO/CPO reward scale, ORPO lambda.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="method: dpo, loss: sigmoid only: assumed label noise (cDPO).")
    simpo_gamma: float = Field(0.5, ge=0.0, description="method: dpo, loss: simpo only: SimPO target reward margin (gamma).")
    cpo_alpha: float = Field(1.0, ge=0.0, description="method: dpo, loss: cpo only: CPO weight of the NLL term on the chosen response.")
    max_prompt_length: int = Field(
        0, ge=0, description="The prompt keeps its last N tokens; must be < data.max_length. "
        "0 = min(512, data.max_length // 2), so a short data.max_length needs no second setting.")
    precompute_ref: bool = Field(
        False, description="Compute the reference log-probs once before training and cache them on disk; otherwise the "
        "reference runs each step (LoRA: the base with the adapter disabled; full: a frozen copy).")
    ref_cache_dir: str = Field("", description="Where precomputed reference log-probs are cached; '' = ~/.cache/tunesmith/ref-logps.")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: weight of desirable (label true) examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: weight of undesirable (label false) examples.")

    def prompt_length(self, max_length: int) -> int:
        """Tokens the prompt keeps: `max_prompt_length`, or by default min(512, half of `data.max_length`)."""
        return self.max_prompt_length or min(512, max_length // 2)

    def unused_keys(self, method: str) -> list[str]:
        """The loss options set away from their defaults that `method` (and `loss`) never read."""
        reads = {"label_smoothing": method == "dpo" and self.loss == "sigmoid",
                 "simpo_gamma": method == "dpo" and self.loss == "simpo",
                 "cpo_alpha": method == "dpo" and self.loss == "cpo"}
        fields = type(self).model_fields
        return [k for k, used in reads.items() if not used and getattr(self, k) != fields[k].default]
