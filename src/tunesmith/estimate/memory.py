"""The memory terms of one training process, each with the arithmetic that produced it.

Bytes per parameter, as tunesmith trains (train/run.py, train/optim.py):
  frozen weights       the storage dtype (fp32/bf16/fp16), or NF4: 0.5 B + block constants
                       (one fp32 absmax per 64 weights = 0.0625 B; double quantization: one 8-bit
                       absmax per 64 + one fp32 per 256 blocks = 0.0159 B), or int8: 1 B + an fp32
                       scale per output row. prepare_model_for_kbit_training casts every
                       non-quantized parameter (embeddings, norms, lm_head) to fp32.
  trainable weights    fp32 always (master weights live in the parameters themselves, PITFALLS 13),
                       so there is no separate master copy; under bf16 autocast the forward caches a
                       bf16 copy of each trainable matrix (2 B) until the forward ends.
  gradients            fp32, 4 B per trainable parameter (DDP over >1 process keeps a bucket copy).
  AdamW                exp_avg + exp_avg_sq in fp32: 8 B; 8-bit AdamW: 2 B + an fp32 absmax per
                       256 values; paged variants hold the same bytes in pageable (evictable) memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..train.losses import CHUNK_ELEMENTS
from . import rl
from .activations import DTYPE_BYTES, ActivationSpec, activation_bytes
from .plan import PY_BYTES_PER_FILE_BYTE, Plan
from .shapes import ModelShape

NF4_CONSTANTS = {True: 1 / 64 + 4 / (64 * 256), False: 4 / 64}  # bytes per weight, double_quant or not
OPTIMIZER_BYTES = {"adamw": 8.0, "paged_adamw": 8.0, "adamw_8bit": 2.0 + 8 / 256, "paged_adamw_8bit": 2.0 + 8 / 256}
GIB = 2**30
# glibc's heap keeps freed activation blocks (see plan.cpu_allocator): the RSS peak of a default run
# exceeds the live peak by about this fraction of the activations, measured in bench/estimate_accuracy.py.
GLIBC_RETENTION = 0.8
# jemalloc / mimalloc with purging off (train/allocator.py, the default of `tunesmith train` when one is
# found): freed blocks are reused, not returned, so the RSS peak is the live peak plus their size-class
# and fragmentation slack. Measured on SmolLM2 at 4 x 512 packed tokens (bench/README.md, "the allocator
# by default"): jemalloc peaked 90-93 MiB, tcmalloc 87 MiB and mimalloc 462 MiB above the pinned glibc run,
# whose RSS follows the live bytes, on 2,690 MiB of saved activations.
PRELOAD_RETENTION = {"jemalloc": 0.035, "tcmalloc": 0.035, "mimalloc": 0.17}
# CPU: what a run adds after the framework baseline whatever its size: the tokenizer, autograd's and
# OpenMP's worker threads, the loader's mapped safetensors pages. Measured: runs of 512 and 2,048 tokens
# per micro-batch both peaked ~30 MiB above the sum of their other terms (bench/README.md).
CPU_RUNTIME = 32 * 2**20


@dataclass
class Term:
    name: str
    bytes: int
    detail: str
    kind: str = "persistent"  # persistent | activations | transient | forward | backward | generation (RL decode) | cpu (host RAM)


@dataclass
class Breakdown:
    terms: list[Term] = field(default_factory=list)

    def add(self, name: str, n: float, detail: str, kind: str = "persistent") -> None:
        self.terms.append(Term(name, int(round(n)), detail, kind))

    def device_bytes(self) -> int:
        """The peak: everything alive throughout, plus the larger of what lives only in the forward
        (autocast's weight copies) and what lives only in the backward (gradients, when they are set
        to None after every step, i.e. without gradient accumulation). Online RL's generation phase
        (KV cache, sampler) ends before the training forward starts: the peak is the larger phase
        over the persistent terms."""
        always = sum(t.bytes for t in self.terms if t.kind not in ("cpu", "forward", "backward", "generation"))
        phase = lambda k: sum(t.bytes for t in self.terms if t.kind == k)  # noqa: E731
        training = always + max(phase("forward"), phase("backward"))
        if not phase("generation"):
            return training
        return max(training, phase("persistent") + phase("generation"))

    def cpu_bytes(self) -> int:
        return sum(t.bytes for t in self.terms if t.kind == "cpu")

    def get(self, name: str) -> int:
        return sum(t.bytes for t in self.terms if t.name == name)


def trainable_count(shape: ModelShape, plan: Plan, adapter_params: int) -> int:
    return shape.total_params if plan.full else adapter_params


def _weights(b: Breakdown, shape: ModelShape, plan: Plan, shard: int) -> None:
    wb = DTYPE_BYTES[plan.weight_dtype]
    rest = shape.embed_params + shape.head_params + shape.other_params
    if plan.full:
        b.add("weights", 4 * shape.total_params / shard,
              f"{shape.total_params:,} params × 4 B (trainable, fp32)" + (f" / {shard} shards" if shard > 1 else ""))
        return
    if plan.quantization == "nf4":
        per = 0.5 + NF4_CONSTANTS[plan.double_quant]
        b.add("weights", shape.linear_params * per + 4 * rest,
              f"{shape.linear_params:,} linear params × {per:.4f} B (NF4 0.5 B + {'double-quantized ' if plan.double_quant else ''}"
              f"absmax constants) + {rest:,} embedding/head/norm params × 4 B (fp32 after prepare_model_for_kbit_training)")
    elif plan.quantization == "int8":
        rows = sum(o for _, _, o in shape.linears)
        b.add("weights", shape.linear_params + 4 * rows + 4 * rest,
              f"{shape.linear_params:,} linear params × 1 B + {rows:,} row scales × 4 B + {rest:,} other params × 4 B")
    else:
        b.add("weights", wb * shape.total_params / shard,
              f"{shape.total_params:,} frozen params × {wb} B ({plan.weight_dtype})" + (f" / {shard} shards" if shard > 1 else ""))


def _states(b: Breakdown, plan: Plan, trainable: int, matmul_params: int) -> None:
    n, N = trainable, plan.gpus
    s = plan.sharding
    opt_shard = N if s in ("zero1", "zero2", "zero3", "fsdp") else 1
    grad_shard = N if s in ("zero2", "zero3", "fsdp") else 1
    if not plan.full:
        b.add("trainable", 4 * n / (N if s in ("zero3", "fsdp") else 1), f"{n:,} adapter params × 4 B (fp32)")
    # zero_grad(set_to_none=True): without accumulation the gradients exist only from the backward to the step.
    grad_kind = "persistent" if plan.grad_accum_steps > 1 else "backward"
    b.add("gradients", 4 * n / grad_shard, f"{n:,} × 4 B (fp32)" + (f" / {grad_shard} ({s})" if grad_shard > 1 else ""), grad_kind)
    if s == "ddp" and N > 1:
        b.add("ddp buckets", 4 * n, f"{n:,} × 4 B: DDP's gradient buckets (a second copy for the all-reduce)")
    per = OPTIMIZER_BYTES[plan.optimizer]
    kind = "cpu" if plan.offload in ("optimizer", "all") else "persistent"
    paged = " (paged: evictable to host RAM under pressure)" if plan.optimizer.startswith("paged") else ""
    b.add("optimizer", per * n / opt_shard, f"{plan.optimizer}: {n:,} × {per:g} B" + (f" / {opt_shard} ({s})" if opt_shard > 1 else "")
          + paged + (" — offloaded to CPU RAM" if kind == "cpu" else ""), kind)
    b.add("master weights", 0, "none separate: the trainable parameters are fp32 themselves (PITFALLS 13)")
    if plan.precision != "fp32" and plan.full:
        m = matmul_params
        b.add("autocast copies", 2 * m / (N if s in ("zero3", "fsdp") else 1),
              f"{m:,} matmul weights × 2 B: bf16 copies of the fp32 weights, cached by autocast until the forward ends", "forward")


def _loss(b: Breakdown, shape: ModelShape, plan: Plan, tokens: int) -> None:
    a = DTYPE_BYTES[plan.precision]
    V, d = shape.vocab, shape.hidden
    if plan.loss_chunk_size > 0:
        rows = max(1, min(plan.loss_chunk_size, CHUNK_ELEMENTS // V, tokens))
        chunk = rows * V * (4 + (a if a != 4 else 0))
        b.add("logits+loss", chunk + 2 * tokens * d * a,
              f"fused chunked head: {rows:,} rows × {V:,} vocab × {4 + (a if a != 4 else 0)} B per chunk "
              f"+ hidden gather and its gradient (2 × {tokens:,} × {d} × {a} B); a plain (B,T,V) loss would take "
              f"{tokens * V * (a + 12) / GIB:.2f} GiB", "transient")
    else:
        b.add("logits+loss", tokens * V * (a + 12),
              f"plain loss: {tokens:,} tokens × {V:,} vocab × ({a} B logits + 4 B fp32 copy + 4 B log-softmax + 4 B its grad)",
              "transient")


def _extras(b: Breakdown, shape: ModelShape, plan: Plan) -> None:
    if plan.reference == "frozen_copy":
        b.add("reference model", 4 * shape.total_params / (plan.gpus if plan.sharding in ("zero3", "fsdp") else 1),
              f"frozen fp32 copy of the policy: {shape.total_params:,} × 4 B")
    elif plan.reference == "adapter_disabled":
        b.add("reference model", 0, "the base with the adapter disabled: no copy (one no-grad forward per step)")
    elif plan.reference == "cached":
        b.add("reference model", 0, "precomputed reference log-probs (2 floats per pair, on disk)")
    if plan.generation_tokens:
        a = DTYPE_BYTES[plan.precision]
        T = plan.seq_len + plan.generation_tokens
        b.add("kv cache", 2 * shape.layers * shape.kv_width * T * plan.micro_batch_size * a,
              f"generation: 2 (k,v) × {shape.layers} layers × {shape.kv_width} kv width × {T} tokens × "
              f"{plan.micro_batch_size} rows × {a} B", "transient")
    if plan.quantization != "none":
        big = max((i * o for _, i, o in shape.linears), default=0)
        b.add("dequantized weight", big * 4, f"one linear dequantized at a time: {big:,} × 4 B", "transient")
    if plan.sharding in ("zero3", "fsdp") and plan.gpus > 1:
        per_layer = shape.linear_params / max(shape.layers, 1)
        b.add("gathered layers", 2 * per_layer * 4, f"FSDP/ZeRO-3 all-gathers ~2 layers at a time: 2 × {int(per_layer):,} × 4 B",
              "transient")


def lora_ranks(shape: ModelShape, plan: Plan, targets: list[str]) -> tuple[tuple[str, int, int], ...]:
    """(leaf name, d_in, r) of every adapted matrix in one decoder layer."""
    if plan.adapter.type not in ("lora", "dora"):
        return ()
    per_model = [(n, i, plan.adapter.r) for n, i, _ in shape.linears if n in targets]
    L = max(shape.layers, 1)
    return tuple(per_model[: len(per_model) // L])


def breakdown(shape: ModelShape, plan: Plan, adapter_params: int, targets: list[str], overhead: int) -> Breakdown:
    """Every term for one process of `plan` on `shape`."""
    b = Breakdown()
    shard = plan.gpus if plan.sharding in ("zero3", "fsdp") else 1
    _weights(b, shape, plan, shard)
    if plan.offload == "all" and shard > 1:
        b.terms[-1].kind = "cpu"
    _states(b, plan, trainable_count(shape, plan, adapter_params), shape.matmul_params)
    tokens = plan.tokens_per_micro_batch()
    spec = ActivationSpec(tokens=tokens, rows=plan.train_rows(), seq_len=tokens if plan.method in ("dpo", "reward") else plan.seq_len,
                          dtype=plan.precision, attn=plan.attn, masked=plan.masked_attention(),
                          checkpointing=plan.checkpointing, full=plan.full, lora=lora_ranks(shape, plan, targets),
                          lora_dropout=plan.adapter.dropout if plan.adapter.type in ("lora", "dora") else 0.0)
    act = activation_bytes(shape, spec)
    b.add("activations", act["saved"], act["detail"], "activations")
    if plan.rl is not None:
        rl.loss_term(b, shape, plan)
        rl.generation_terms(b, shape, plan)
        rl.reward_model_terms(b, plan.rl)
    else:
        _loss(b, shape, plan, tokens)
    _extras(b, shape, plan)
    if plan.data_bytes:
        b.add("data", plan.data_bytes * PY_BYTES_PER_FILE_BYTE, f"tokenized rows in Python: ~{PY_BYTES_PER_FILE_BYTE} B per byte "
              f"of the {plan.data_bytes / 2**20:.1f} MiB of training files (rough; host RAM)", "cpu" if plan.target == "gpu" else "persistent")
    if plan.allocator == "glibc":
        b.add("allocator", GLIBC_RETENTION * act["saved"], f"glibc heap retention: {GLIBC_RETENTION} × activations (measured); "
              "tunesmith train pins the threshold on Linux (train/host_memory.py)", "transient")
    if plan.allocator in PRELOAD_RETENTION:
        share = PRELOAD_RETENTION[plan.allocator]
        b.add("allocator", share * act["saved"], f"{plan.allocator} (preloaded by tunesmith train) keeps freed blocks for "
              f"reuse: {share} × activations of slack (measured)", "transient")
    if plan.target == "cpu":
        b.add("runtime", CPU_RUNTIME, "tokenizer, autograd/OpenMP worker threads, mapped weight pages (measured constant)")
    b.add("framework", overhead, "measured: the process before the model (Python, torch, transformers, CUDA context on a GPU)")
    return b
