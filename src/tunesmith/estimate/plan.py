"""What is being estimated: one training run, resolved for a target device.

`Plan` is the run config reduced to what memory and time depend on, with `auto` resolved the way
`tunesmith train` resolves it on that device (bf16 on a GPU, fp32 on the CPU). It is built from the
same run config as `train` (`plan_from_config`), and the CLI shortcuts (--model, --method ...) are
turned into config overrides first, so both paths validate through `load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import AdapterConfig, RunConfig
from ..errors import ConfigError
from .rl import RL_METHODS, RLPlan, rl_plan

SHARDING = ("ddp", "fsdp", "zero1", "zero2", "zero3")
OFFLOAD = ("none", "optimizer", "all")
REF_FREE_LOSSES = ("simpo", "cpo", "orpo")  # DPO-family losses without a reference model


@dataclass(frozen=True)
class Plan:
    method: str  # sft | pretrain | reward | dpo | kto | grpo | rloo | ppo
    adapter: AdapterConfig
    quantization: str  # none | int8 | nf4
    double_quant: bool
    weight_dtype: str  # storage of frozen weights: fp32 | bf16 | fp16
    precision: str  # compute (autocast) dtype
    optimizer: str
    micro_batch_size: int
    seq_len: int  # tokens of one training row (online RL: the longest prompt + its completions, rl.py)
    packing: bool
    grad_accum_steps: int
    checkpointing: bool
    loss_chunk_size: int  # 0 = plain (B, T, V) logits
    attn: str
    reference: str  # none | adapter_disabled | frozen_copy | cached
    gpus: int = 1
    sharding: str = "ddp"
    offload: str = "none"
    target: str = "cpu"  # "cpu" or "gpu": where the run happens
    generation_tokens: int = 0  # RL-style rollouts: tokens generated per row (KV cache)
    max_steps: int = 0
    dataset_rows: int = 0  # rows of max_length per epoch (0 = unknown)
    data_bytes: int = 0  # bytes of the training files (their tokenized rows stay in host RAM)
    allocator: str = "caching"  # GPU: torch's caching allocator; CPU: jemalloc/tcmalloc/mimalloc (preloaded), mmap (glibc pinned) or glibc
    rl: RLPlan | None = None  # online RL: rollout shapes and passes (estimate/rl.py)

    @property
    def full(self) -> bool:
        return self.adapter.type == "none"

    def train_rows(self) -> int:
        """Rows of one training micro-batch: one per DPO/reward micro-batch (packed), one per online-RL
        group when its prompt is shared (else one per completion), B otherwise."""
        if self.rl is not None:
            return self.micro_batch_size * (1 if self.rl.share_prompts else self.rl.generations)
        return 1 if self.method in ("dpo", "reward") else self.micro_batch_size

    def tokens_per_micro_batch(self) -> int:
        """DPO/reward put prompt + chosen + rejected of each pair in one row (at most 2·T per pair);
        online RL: its group rows (the longest prompt; rl.py); KTO, SFT and pretraining: B rows of T."""
        if self.rl is not None:
            return self.train_rows() * self.seq_len
        per_row = 2 * self.seq_len if self.method in ("dpo", "reward") else self.seq_len
        return self.micro_batch_size * per_row

    def _shared_layout(self) -> bool:
        return self.packing or self.method in ("dpo", "reward") or (self.rl is not None and self.rl.share_prompts)

    def segment_attention(self) -> bool:
        """Packed rows on the CPU under sdpa: one causal attention call per example (or per DPO prompt +
        response, or per RL completion with its prompt), no mask and no repeated k/v (train/segment_attention.py)."""
        return self._shared_layout() and self.target == "cpu" and self.attn == "sdpa"

    def masked_attention(self) -> bool:
        # Elsewhere packed rows and the shared-prompt DPO/reward/RL layouts all need an explicit mask.
        return self._shared_layout() and not self.segment_attention()

    def with_batch(self, micro_batch_size: int) -> "Plan":
        return replace(self, micro_batch_size=micro_batch_size)


# The tokenized data lives in Python objects for the whole run. Measured here (RSS after
# prepare_data, GSM8K train, 4.2 MB): 73 MiB as packed SFT rows (18 B per file byte), 49 MiB as
# pretraining blocks of its answers (12 B). 16 B per byte of the training files (gzip: 4x the
# compressed size) sits between them; the term says it is this rough.
PY_BYTES_PER_FILE_BYTE = 16


def data_file_bytes(files: list[str]) -> int:
    from pathlib import Path

    total = 0
    for f in files:
        p = Path(f)
        if p.is_file():
            total += p.stat().st_size * (4 if p.suffix == ".gz" else 1)
        elif p.is_dir():  # a saved `datasets` directory: its Arrow files
            total += sum(q.stat().st_size for q in p.rglob("*.arrow"))
    return total


# A user's MALLOC_MMAP_THRESHOLD_ above this leaves activation-sized blocks (MiBs) to the heap: glibc's
# retention then applies. Measured on SmolLM2 at 4 x 512 (bench/README.md, speed note): 32 MiB peaked at
# 6.0 GB against 3.3 GB at 128 KiB (tunesmith's pin).
HEAP_THRESHOLD = 1 << 20


def cpu_allocator(this_process: bool = False) -> str:
    """The malloc a CPU run has, as the estimate models it. `tunesmith train` re-executes itself under
    jemalloc, tcmalloc or mimalloc when it finds one (train/allocator.py): that name, the live bytes
    plus a measured slack (estimate/memory.py). Without one, glibc's default malloc raises its mmap threshold after
    freeing a large block, so later activations come from a heap that is not returned to the OS; the
    run pins the threshold at 128 KiB on Linux (train/host_memory.py), so large blocks stay mmapped and
    the RSS follows the live bytes ("mmap"). A user's MALLOC_MMAP_THRESHOLD_ stands instead: "mmap" up
    to HEAP_THRESHOLD, "glibc" (with its measured retention term) above. Off Linux the dynamic
    threshold stands ("glibc"). `this_process`: the malloc of the calling process (the run's own
    estimate) rather than the one `tunesmith train` would pick from this environment (`tunesmith estimate`)."""
    import os
    import sys

    from ..errors import ConfigError
    from ..train import allocator

    if not sys.platform.startswith("linux"):
        return "glibc"
    loaded = allocator.loaded()
    if loaded is not None:
        return loaded
    if not this_process:
        try:
            decision = allocator.decide(os.environ)
        except ConfigError:  # a bad TUNESMITH_ALLOCATOR: `tunesmith train` stops with that error
            decision = None
        if decision is not None and decision.env is not None:
            return decision.env[allocator.ACTIVE_ENV].split(":", 1)[0]
    user = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    try:
        return "glibc" if user is not None and int(user) > HEAP_THRESHOLD else "mmap"
    except ValueError:  # glibc ignores a value it cannot parse, and so does tunesmith's pin (train/host_memory.py)
        return "glibc"


def _reference(cfg: RunConfig, rl: RLPlan | None) -> str:
    if rl is not None:  # online RL: full fine-tuning copies the model only when training needs the reference
        if rl.reference_every == 0:
            return "none"
        return "frozen_copy" if cfg.adapter.type == "none" else "adapter_disabled"
    if cfg.method not in ("dpo", "kto") or (cfg.method == "dpo" and cfg.dpo.loss in REF_FREE_LOSSES):
        return "none"
    if cfg.dpo.precompute_ref:
        return "cached"
    return "frozen_copy" if cfg.adapter.type == "none" else "adapter_disabled"


def plan_from_config(cfg: RunConfig, *, target: str = "cpu", gpus: int = 1, sharding: str | None = None,
                     offload: str = "none", generation_tokens: int = 0, dataset_rows: int = 0,
                     this_process: bool = False, prompt_tokens: tuple[float, int] | None = None) -> Plan:
    """Resolve `cfg` for a run on `target` ("cpu" or "gpu") over `gpus` processes (`this_process`:
    the run's own estimate, with this process's malloc; see cpu_allocator). Online RL: `generation_tokens`
    is the expected completion length (default `rl.max_new_tokens`) and `prompt_tokens` (mean, longest)
    the prompt length (default: read from the data, rl.py); `data.max_length` plays no part."""
    if sharding is None:
        sharding = "fsdp" if cfg.train.fsdp else "ddp"
    if sharding not in SHARDING:
        raise ConfigError(f"--sharding {sharding!r}: use one of {', '.join(SHARDING)}")
    if offload not in OFFLOAD:
        raise ConfigError(f"--offload {offload!r}: use one of {', '.join(OFFLOAD)}")
    if gpus < 1:
        raise ConfigError(f"--gpus {gpus}: must be >= 1")
    if sharding != "ddp" and cfg.model.quantization != "none":
        raise ConfigError(f"--sharding {sharding} cannot shard bitsandbytes-quantized weights (as `train.fsdp`); use ddp")
    auto = "bf16" if target == "gpu" else "fp32"
    precision = auto if cfg.train.precision == "auto" else cfg.train.precision
    weight_dtype = cfg.model.dtype if cfg.model.dtype != "auto" else (auto if precision != "fp32" else "fp32")
    if precision == "fp16" and target == "cpu":
        raise ConfigError("`train.precision: fp16` needs a GPU; estimate with --device (a GPU class) or use bf16/fp32")
    rl = None
    seq_len = cfg.data.max_length
    if cfg.method in RL_METHODS:
        if generation_tokens < 0:
            raise ConfigError(f"--generation-tokens {generation_tokens}: must be >= 0")
        if generation_tokens > cfg.rl.max_new_tokens:
            raise ConfigError(f"--generation-tokens {generation_tokens} exceeds `rl.max_new_tokens` ({cfg.rl.max_new_tokens}), "
                              "which caps every completion; lower it or raise rl.max_new_tokens")
        rl = rl_plan(cfg, target, prompt_tokens, generation_tokens)
        seq_len, generation_tokens = int(round(rl.prompt_tokens_max + (rl.generations if rl.share_prompts else 1) * rl.completion_tokens)), 0
    return Plan(method=cfg.method, adapter=cfg.adapter, quantization=cfg.model.quantization,
                double_quant=cfg.model.double_quant, weight_dtype=weight_dtype, precision=precision,
                optimizer=cfg.train.optimizer, micro_batch_size=cfg.train.micro_batch_size, seq_len=seq_len,
                packing=cfg.data.packing, grad_accum_steps=cfg.train.grad_accum_steps,
                checkpointing=cfg.train.gradient_checkpointing, loss_chunk_size=cfg.train.loss_chunk_size,
                attn=cfg.model.attn_implementation, reference=_reference(cfg, rl), gpus=gpus, sharding=sharding,
                offload=offload, target=target, generation_tokens=generation_tokens, max_steps=cfg.train.max_steps,
                dataset_rows=dataset_rows, data_bytes=data_file_bytes(cfg.data.train + cfg.data.eval),
                allocator="caching" if target == "gpu" else cpu_allocator(this_process), rl=rl)


def shortcut_overrides(model: str | None = None, method: str | None = None, micro_batch_size: int | None = None,
                       seq_len: int | None = None, gradient_checkpointing: bool | None = None,
                       packing: bool | None = None) -> list[str]:
    """`--model X --method qlora ...` as config overrides: full = adapter.type none, lora = LoRA on a
    16/32-bit base, qlora = LoRA on an NF4 base (double quantization)."""
    out = []
    if model:
        out.append(f"model.path={model}")
    if method:
        table = {"full": ["adapter.type=none", "model.quantization=none"],
                 "lora": ["adapter.type=lora", "model.quantization=none"],
                 "qlora": ["adapter.type=lora", "model.quantization=nf4"]}
        if method not in table:
            raise ConfigError(f"--method {method!r}: use full, lora or qlora (or set adapter.*/model.quantization in a config)")
        out += table[method]
    if micro_batch_size is not None:
        out.append(f"train.micro_batch_size={micro_batch_size}")
    if seq_len is not None:
        out.append(f"data.max_length={seq_len}")
    if gradient_checkpointing is not None:
        out.append(f"train.gradient_checkpointing={str(gradient_checkpointing).lower()}")
    if packing is not None:
        out.append(f"data.packing={str(packing).lower()}")
    return out
