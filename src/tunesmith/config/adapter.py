"""`adapter:` — which PEFT method and its options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Section


class IA3Options(_Section):
    feedforward_modules: str | list[str] = Field(
        "mlp", description="Adapted modules whose *input* is scaled (the MLP's down projection in the IA3 paper): "
        "a preset (mlp, attention, all-linear) intersected with adapter.target_modules, or names."
    )


class PrefixOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Prefix length: key/value vectors prepended in every layer.")
    projection: bool = Field(False, description="Reparameterise the prefix through a 2-layer MLP (the paper's trick; "
                             "trains more parameters, saves the same prefix).")
    encoder_hidden_size: int = Field(256, gt=0, description="Hidden width of that MLP (projection: true only).")


class PromptOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Soft-prompt length (embeddings prepended to the input).")
    init_text: str = Field("", description="Initialise the soft prompt from the embeddings of this text (empty: random).")


class PTuningOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Virtual tokens produced by the prompt encoder.")
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="Prompt encoder: MLP or bidirectional LSTM (P-tuning paper).")
    encoder_hidden_size: int = Field(128, gt=0, description="Hidden width of the prompt encoder.")


class BottleneckOptions(_Section):
    size: int = Field(64, gt=0, description="Bottleneck width: d_model -> size -> d_model.")
    after: list[Literal["attention", "mlp"]] = Field(
        default_factory=lambda: ["attention", "mlp"], min_length=1,
        description="Where the adapters go: after each layer's attention block, its MLP, or both (Houlsby: both).",
    )
    nonlinearity: Literal["relu", "gelu", "silu"] = "relu"


# Which options mean something for which `adapter.type`; validation names the key when they do not.
_ADAPTER_OPTIONS = {
    "r": ("lora", "dora"), "alpha": ("lora", "dora"), "dropout": ("lora", "dora"), "use_rslora": ("lora", "dora"),
    "init": ("lora", "dora"), "rank_pattern": ("lora", "dora"), "alpha_pattern": ("lora", "dora"),
    "target_modules": ("lora", "dora", "ia3"), "modules_to_save": ("lora", "dora", "ia3", "prefix", "prompt", "ptuning", "adapter"),
    "ia3": ("ia3",), "prefix": ("prefix",), "prompt": ("prompt",), "ptuning": ("ptuning",), "bottleneck": ("adapter",),
}


class AdapterConfig(_Section):
    type: Literal["none", "lora", "dora", "ia3", "prefix", "prompt", "ptuning", "adapter"] = Field(
        "lora", description="none = full fine-tuning; lora (QLoRA with model.quantization: nf4), dora, ia3, prefix, "
        "prompt, ptuning (PEFT); adapter = Houlsby bottleneck adapters. See docs/peft.md."
    )
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear", description="Preset ('all-linear', 'attention', 'mlp') or explicit module names (q_proj, v_proj, ...)."
    )
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained in full next to the adapter (e.g. lm_head, embed_tokens).")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="LoRA init: default (Kaiming A, zero B), gaussian (Gaussian A, zero B), pissa (principal "
        "singular vectors), olora (QR); pissa/olora rewrite the base weights and need model.quantization: none.",
    )
    rank_pattern: dict[str, int] = Field(default_factory=dict, description="Per-module rank, e.g. {'layers.0.self_attn.q_proj': 4} (regex on names).")
    alpha_pattern: dict[str, float] = Field(default_factory=dict, description="Per-module alpha, same keys as rank_pattern.")
    ia3: IA3Options = Field(default_factory=IA3Options)
    prefix: PrefixOptions = Field(default_factory=PrefixOptions)
    prompt: PromptOptions = Field(default_factory=PromptOptions)
    ptuning: PTuningOptions = Field(default_factory=PTuningOptions)
    bottleneck: BottleneckOptions = Field(default_factory=BottleneckOptions)

    @model_validator(mode="after")
    def _options_fit_type(self) -> AdapterConfig:
        if self.type == "none":
            return self
        # Compared with the defaults rather than "was it written", so a dumped config.yaml reloads.
        for key, types in _ADAPTER_OPTIONS.items():
            default = type(self).model_fields[key].get_default(call_default_factory=True)
            if self.type not in types and getattr(self, key) != default:
                raise ValueError(f"`adapter.{key}` applies to adapter.type {' / '.join(types)}, not {self.type}; remove it")
        return self

    def is_prompt_learning(self) -> bool:
        return self.type in ("prefix", "prompt", "ptuning")

