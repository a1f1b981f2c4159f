"""`train:` — the optimizer, schedule, precision and loop settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Section, bf16_available


class TrainConfig(_Section):
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the training data; not used when max_steps > 0 (train start says so).")
    max_steps: int = Field(0, ge=0, description="Optimizer steps; 0 = as many as `epochs` takes. When > 0 it alone decides "
                           "the length (`train.max_steps=20` on the command line shortens any run).")
    micro_batch_size: int = Field(4, gt=0, description="Rows per forward pass per process.")
    grad_accum_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay as a fraction of lr.")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"] = "adamw"
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip the global grad norm to this; 0 disables clipping.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision (autocast). auto: bf16 on a GPU that supports it, else fp32."
    )
    gradient_checkpointing: bool = False
    fsdp: bool = Field(
        False, description="Under torchrun/accelerate with several processes: shard parameters, gradients and optimizer "
        "state with PyTorch FSDP2 (one group per decoder layer) instead of replicating them (DDP). Works on the CPU (gloo) too.")
    loss_chunk_size: int = Field(
        2048, ge=0, description="Most tokens per chunk of the fused lm_head + cross-entropy (the (B,T,V) logits never exist at once); "
        "chunks are also capped at 2^26 logits (256 MiB fp32), so large vocabularies get fewer rows; 0 = plain loss."
    )
    save_every: int = Field(500, ge=0, description="Checkpoint every N optimizer steps (0 = only the final result).")
    keep_checkpoints: int = Field(2, ge=0, description="Keep the newest N checkpoints (0 = keep all).")
    eval_every: int = Field(0, ge=0, description="Eval loss every N steps (0 = only at the end).")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evals without improvement (0 = off).")
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    log_every: int = Field(1, gt=0)
    seed: int = 42
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    progress: bool = Field(True, description="Show a progress bar on stderr.")

    @model_validator(mode="after")
    def _exclusive_warmup(self) -> TrainConfig:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("`train.warmup_steps` and `train.warmup_ratio` are exclusive; set one")
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("`train.early_stopping_patience` needs `train.eval_every` > 0 (evals to compare)")
        return self

    def unused_epochs(self) -> str:
        """A note when `epochs` was set but `max_steps` decides the length ('' otherwise). Not an error:
        `train.max_steps=N` on the command line is how a config with epochs gets a short trial run."""
        if self.max_steps and self.epochs != type(self).model_fields["epochs"].default:
            return (f"`train.max_steps: {self.max_steps}` decides the length; `train.epochs: {self.epochs:g}` is not "
                    "used (set train.max_steps=0 to train by epochs)")
        return ""

    def compute_precision(self, bf16_ok: bool | None = None) -> Literal["fp32", "bf16", "fp16"]:
        """`precision` with `auto` resolved: bf16 where the GPU supports it, else fp32."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if (bf16_available() if bf16_ok is None else bf16_ok) else "fp32"

    def warmup_for(self, total_steps: int) -> int:
        return self.warmup_steps or int(round(self.warmup_ratio * total_steps))

