"""`RunConfig`: every section together, the checks that need more than one section, and the values
derived from several sections (resolved precision and storage dtype, the prompt budget)."""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from .adapter import AdapterConfig
from .base import _Section
from .data import DataConfig
from .evaluate import EvalConfig
from .model import ModelConfig
from .preference import PreferenceConfig
from .prepare import PrepareConfig
from .rl import RLConfig, check_rl
from .train import TrainConfig

PREFERENCE_METHODS = ("reward", "dpo", "kto")


def _deprecated_dpo_section(raw: Any) -> Any:
    """`dpo:` was the section's name although reward and KTO read it too; accept it, say the new name."""
    if not isinstance(raw, dict) or "dpo" not in raw:
        return raw
    if "preference" in raw:
        raise ValueError("both `preference:` and its old name `dpo:` are set; keep `preference:` only")
    if int(os.environ.get("RANK", "0")) == 0:
        print("config: the `dpo:` section is now called `preference:` (it configures reward and kto too); "
              "`dpo:` still works but will be removed, rename it", file=sys.stderr, flush=True)
    return {("preference" if k == "dpo" else k): v for k, v in raw.items()}


class RunConfig(_Section):
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    method: Literal["sft", "pretrain", "reward", "dpo", "kto", "grpo", "rloo", "ppo"] = Field("sft", description="Training objective.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig, description="reward / dpo / kto settings (old name: `dpo`).")
    output_dir: str = Field("runs/run", description="The run directory (refused when non-empty unless --overwrite or --resume).")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="`tunesmith prepare`: filters, dedup, PII, contamination, split and mix.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="`tunesmith eval` settings.")
    rl: RLConfig = Field(default_factory=RLConfig, description="grpo / rloo / ppo settings (config/rl.py).")

    @model_validator(mode="before")
    @classmethod
    def _rename_dpo(cls, raw: Any) -> Any:
        return _deprecated_dpo_section(raw)

    @property
    def dpo(self) -> PreferenceConfig:
        """Read-only old name of `preference`, for code written before the rename."""
        return self.preference

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.model.quantization != "none" and self.adapter.type == "none":
            raise ValueError(
                f"`model.quantization: {self.model.quantization}` needs an adapter: quantized weights cannot be "
                "trained in full; set `adapter.type: lora` (QLoRA) or `model.quantization: none`"
            )
        if self.train.fsdp and self.adapter.type == "adapter":
            raise ValueError("`train.fsdp` is not supported with `adapter.type: adapter` (bottleneck adapters are saved "
                             "from the live modules, not a gathered state dict); use DDP (`train.fsdp: false`)")
        if self.train.fsdp and self.model.quantization != "none":
            raise ValueError("`train.fsdp` cannot shard bitsandbytes-quantized weights; set `train.fsdp: false` "
                             "(QLoRA's frozen 4-bit base is small: DDP replicates it cheaply) or `model.quantization: none`")
        if self.adapter.is_prompt_learning() and self.data.packing:
            raise ValueError(
                f"`data.packing: true` cannot be combined with `adapter.type: {self.adapter.type}`: virtual tokens are "
                "prepended to the whole row, so packed examples would share them and PEFT ignores the per-example "
                "position_ids; set `data.packing: false`"
            )
        if self.adapter.type == "prefix" and self.train.gradient_checkpointing:
            raise ValueError(
                "`adapter.type: prefix` cannot be combined with `train.gradient_checkpointing: true`: the prefix is a "
                "key/value cache, which checkpointed layers recompute without (PEFT refuses it too); turn one off"
            )
        if self.adapter.type == "dora" and self.model.quantization == "int8":
            raise ValueError(
                "`adapter.type: dora` on `model.quantization: int8` is not supported: PEFT 0.21's DoRA on an 8-bit "
                "bitsandbytes layer fails in the forward (its int8 state is consumed by the weight-norm init); use "
                "`model.quantization: nf4` (QDoRA) or `adapter.type: lora`"
            )
        if self.adapter.init in ("pissa", "olora") and self.model.quantization != "none":
            raise ValueError(
                f"`adapter.init: {self.adapter.init}` rewrites the base weights from their SVD/QR and cannot start from "
                f"`model.quantization: {self.model.quantization}`; use init: default/gaussian or model.quantization: none"
            )
        if self.method == "pretrain" and self.data.format not in ("auto", "text"):
            raise ValueError("`method: pretrain` trains on raw text; set `data.format: text` (or auto)")
        check_rl(self)
        return self

    @model_validator(mode="after")
    def _preference_consistent(self) -> RunConfig:
        if self.method not in PREFERENCE_METHODS:
            return self
        # Compared with the defaults rather than "was it written", so a dumped config.yaml reloads.
        why = {"packing": "the preference pipeline lays out its pairs/examples itself and never reads it",
               "train_on_prompt": "preference losses score the response tokens only"}
        for key, reason in why.items():
            if getattr(self.data, key):
                raise ValueError(f"`data.{key}` applies to method sft/pretrain, not {self.method} ({reason}); remove it")
        if unused := self.preference.unused_keys(self.method):
            key = unused[0]
            raise ValueError(f"`preference.{key}` is not read by method {self.method}"
                             + (f" with loss {self.preference.loss}" if self.method == "dpo" else "")
                             + f"; remove it (it applies to {_ONLY_FOR[key]})")
        if self.data.format != "auto":
            raise ValueError(f"`method: {self.method}` reads preference rows (prompt/chosen/rejected, HH transcripts or "
                             "prompt/completion/label); set `data.format: auto` and map fields with `data.columns`")
        if self.preference.max_prompt_length >= self.data.max_length:
            raise ValueError(f"`preference.max_prompt_length` ({self.preference.max_prompt_length}) must be < `data.max_length` "
                             f"({self.data.max_length}) to leave room for the response; or set it to 0 (half of data.max_length)")
        if self.adapter.is_prompt_learning():
            raise ValueError(f"`method: {self.method}` does not support `adapter.type: {self.adapter.type}`: the preference "
                             "and reward forwards read the backbone directly, where virtual tokens never enter; use lora, "
                             "dora, ia3, adapter or none")
        if self.method in ("dpo", "kto") and self.adapter.init in ("pissa", "olora") and self.adapter.type in ("lora", "dora"):
            raise ValueError(f"`adapter.init: {self.adapter.init}` rewrites the base weights into a residual, so the base "
                             "with the adapter disabled is no longer the reference model; use `adapter.init: default` or "
                             "`gaussian` for preference training")
        if self.train.loss_chunk_size == 0:
            raise ValueError(f"`train.loss_chunk_size: 0` (plain logits) is for sft/pretrain; `method: {self.method}` always "
                             "gathers its log-probs in chunks; leave loss_chunk_size at a positive value")
        if self.method == "kto" and self.train.micro_batch_size < 2:
            raise ValueError("`method: kto` estimates the KL term from mismatched pairs within a micro-batch, so "
                             "`train.micro_batch_size` must be >= 2 (PITFALLS 10)")
        if self.method == "kto" and self.preference.precompute_ref:
            raise ValueError("`preference.precompute_ref` is not available for `method: kto` (its KL pairs change every batch); set it to false")
        return self

    def compute_precision(self) -> Literal["fp32", "bf16", "fp16"]:
        """`train.precision` resolved for this machine (auto: bf16 on a GPU that supports it, else fp32)."""
        return self.train.compute_precision()

    def storage_dtype(self) -> Literal["fp32", "bf16", "fp16"]:
        """`model.dtype` resolved for this machine and the resolved compute precision."""
        return self.model.storage_dtype(self.compute_precision())

    def prompt_length(self) -> int:
        """Tokens a preference prompt keeps (see `preference.max_prompt_length`)."""
        return self.preference.prompt_length(self.data.max_length)

    def start_notes(self) -> list[str]:
        """What train start should tell the user about how this config will run (derived, never an error)."""
        return [n for n in (self.train.unused_epochs(), self.full_logits_reason()) if n]

    def full_logits_reason(self) -> str:
        """Why this run's loss will hold the full (B, T, V) logits instead of fused chunks ('' if it
        will not): a trained lm_head is a PEFT wrapper or copy, not the plain Linear the chunked loss
        multiplies by (train/forward.py, objectives/logps.py)."""
        targets = [self.adapter.target_modules] if isinstance(self.adapter.target_modules, str) else self.adapter.target_modules
        how = ("`adapter.modules_to_save` trains lm_head as a full copy" if "lm_head" in self.adapter.modules_to_save
               else "`adapter.target_modules` puts an adapter on lm_head" if "lm_head" in targets else "")
        if not how or self.adapter.type == "none":
            return ""
        return (f"{how}, so the loss computes the full (micro_batch_size x max_length x vocabulary) logits at once, "
                "without the chunked lm_head + cross-entropy; expect far more activation memory (lower "
                "train.micro_batch_size or data.max_length if it runs out)")

    def resolved(self) -> RunConfig:
        """A copy with `train.precision` and `model.dtype` pinned to what this machine will use, so the
        loop, the model loader and the saved config.yaml all read one value. The user's config (and
        this object) are left as written; this is a derived value, not a validator rewrite."""
        precision = self.compute_precision()
        return self.model_copy(update={"train": self.train.model_copy(update={"precision": precision}),
                                       "model": self.model.model_copy(update={"dtype": self.model.storage_dtype(precision)})})

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_ONLY_FOR = {"label_smoothing": "method: dpo with loss: sigmoid", "simpo_gamma": "method: dpo with loss: simpo",
             "cpo_alpha": "method: dpo with loss: cpo"}
