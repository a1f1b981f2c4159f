"""Online RL (`method: grpo | rloo | ppo`) in the estimate: what one optimizer step does, as
objectives/rl/ runs it, reduced to shapes.

Per step, on each process, n = micro_batch_size × grad_accum_steps prompts (of P tokens) and G =
`rl.num_generations` completions of C tokens each (C = `rl.max_new_tokens` unless an expected
length is given):

  generation (once per `reuse` steps: `rl.num_iterations`, PPO's `rl.ppo_epochs`; rollout/decode.py)
    prefill   each distinct prompt once (its K/V copied to its G rows): n·P tokens, one logit row each
    decode    C - 1 forwards of n·G rows of one token over a KV cache preallocated to P + max_new_tokens
  scoring (once per rollout, no grad; online.py `_passes`)
    policy    the old log-probs (and PPO's values) when a batch is reused, for PPO, or KL in the reward
    reference beta > 0 (or PPO's kl_target): every rollout; else every `rl.kl_every` (the logged `kl`),
              LoRA only (the adapter disabled; full fine-tuning keeps a frozen copy only when beta > 0)
    reward    each `{reward_model: RUN_DIR}`: a forward of its own model over prompt + completion
  training (every step) forward + backward over the group rows: with shared prompts (batch.py) a
            group is ONE row [prompt | c1 | ... | cG] (P + G·C tokens), otherwise G rows of P + C;
            the vocabulary projection runs on the completion tokens only (policy.py)

Memory: the training micro-batch's activations and its chunked head, and, in the generation phase
instead (the decode's buffers are freed before the training forward), the KV cache and the sampling
buffers of all n·G rows. The peak is the larger phase on top of what persists (memory.Breakdown).

The prompt length is read from the data: up to PROMPT_SAMPLE prompts rendered with the chat template,
as the run renders them (a tokenizer load, no weights); the mean serves time, the longest memory. A
config whose data or tokenizer cannot be read falls back to `rl.max_prompt_length` (an upper bound,
said in the output); `--prompt-tokens` overrides both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RL_METHODS = ("grpo", "rloo", "ppo")
PROMPT_SAMPLE = 256
# Decode on the CPU is not FLOP-bound: each of its C - 1 forwards reads every weight for a handful of
# rows, and the sampler draws a (rows, V) fp64 noise vector. Calibrated on the GRPO SmolLM2 bench
# (bench/grpo_vs_trl.py, 1 thread, quiet machine: 5.36 CPU s/step, of which generation ~47% by the
# session-3 profile = 2.5 s): after the prefill and the per-row FLOPs at the training utilisation,
# 15 decode steps of 16 rows leave ~0.058 s a step for 540 MB of fp32 weights = ~9 GB/s of weight
# streaming (memory bandwidth, the sampler and Python's per-layer overhead together).
CPU_DECODE_BYTES_PER_S = 9e9
# GPU: HBM bandwidth of a data-centre GPU (~1.5-3 TB/s) and eager PyTorch's launch overhead per decoder
# layer and token (~0.5 ms: 15-20 kernels at ~25 µs), which dominates small models. Not calibrated
# here (no GPU run was measured).
GPU_DECODE_BYTES_PER_S = 1.5e12
GPU_DECODE_LAYER_S = 5e-4


@dataclass(frozen=True)
class RLPlan:
    generations: int  # G completions per prompt
    prompt_tokens: float  # mean rendered prompt length (time)
    prompt_tokens_max: int  # the longest (memory: the KV cache, the largest block)
    prompt_source: str  # where the prompt length came from
    completion_tokens: int  # C: expected completion length (time, training rows); default max_new_tokens
    max_new_tokens: int  # the KV cache is preallocated to prompt + this
    reuse: int  # optimizer steps per generation batch (num_iterations / ppo_epochs)
    policy_pass: bool  # a no-grad policy forward at rollout time
    reference_every: float  # fraction of rollouts with a reference forward
    value_head: bool  # PPO
    share_prompts: bool  # a group is one row [prompt | c1 | ... | cG]
    vllm_memory: float = 0.0  # rl.generator: vllm: the GPU fraction vLLM's engine takes (0: the built-in decode)
    reward_models: tuple[str, ...] = ()  # run directories of `{reward_model: RUN_DIR}` rewards


def rl_plan(cfg, target: str, prompt_tokens: tuple[float, int] | None = None, completion_tokens: int = 0) -> RLPlan:
    """The RL part of the plan from a validated `method: grpo | rloo | ppo` config. `prompt_tokens`:
    (mean, longest) when known (the run's own data stats, or --prompt-tokens); else read from the data."""
    from ..objectives.rl.batch import _share_prompt

    rl, ppo = cfg.rl, cfg.method == "ppo"
    source = "given"
    if prompt_tokens is None:
        prompt_tokens, source = measured_prompts(cfg)
    mean, longest = float(prompt_tokens[0]), int(prompt_tokens[1])
    G = rl.num_generations
    C = completion_tokens or rl.max_new_tokens
    reuse = rl.ppo_epochs if ppo else rl.num_iterations
    needs_ref = rl.beta > 0 or (ppo and rl.kl_target is not None)
    lora = cfg.adapter.type != "none"
    ref_every = 1.0 if needs_ref else (1.0 / rl.kl_every if rl.kl_every and lora else 0.0)
    mask_free = target == "cpu" and cfg.model.attn_implementation == "sdpa"
    share = (G > 1 and cfg.model.attn_implementation != "flash_attention_2"
             and (mask_free or _share_prompt(longest, [C] * G)))
    return RLPlan(generations=G, prompt_tokens=mean, prompt_tokens_max=longest, prompt_source=source,
                  completion_tokens=C, max_new_tokens=rl.max_new_tokens, reuse=reuse,
                  policy_pass=ppo or reuse > 1 or (rl.beta > 0 and rl.kl_in == "reward"), reference_every=ref_every,
                  value_head=ppo, share_prompts=share, vllm_memory=rl.vllm_gpu_memory if rl.generator == "vllm" else 0.0,
                  reward_models=tuple(r["reward_model"] for r in rl.rewards if isinstance(r, dict)))


def measured_prompts(cfg) -> tuple[tuple[float, int], str]:
    """(mean, longest) rendered prompt length of the first PROMPT_SAMPLE usable prompts, as
    objectives/rl/data.py renders and filters them; `rl.max_prompt_length` when they cannot be read."""
    from ..data.encode import resolve_chat_template
    from ..data.formats import RowError, apply_columns
    from ..data.readers import read_rows
    from ..errors import UserError
    from ..models.loading import load_tokenizer
    from ..objectives.rl.data import _messages, prompt_ids

    cap = cfg.rl.max_prompt_length
    lengths: list[int] = []
    try:
        tok = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
        resolve_chat_template(tok, cfg.data.chat_template)
        for path in cfg.data.train:
            for row in read_rows(path):
                try:
                    n = len(prompt_ids(tok, _messages(apply_columns(row, cfg.data.columns, strict=False), row.where, cfg.data.format)))
                except RowError:
                    continue
                if n <= cap:
                    lengths.append(n)
                if len(lengths) >= PROMPT_SAMPLE:
                    break
            if len(lengths) >= PROMPT_SAMPLE:
                break
    except (UserError, OSError, ValueError) as e:  # no tokenizer / unreadable data: the stated upper bound
        return (cap, cap), f"rl.max_prompt_length (the prompts could not be read: {type(e).__name__}: {e}; pass --prompt-tokens)"
    if not lengths:
        return (cap, cap), "rl.max_prompt_length (no usable prompt in data.train)"
    return (sum(lengths) / len(lengths), max(lengths)), f"data: {len(lengths)} prompts rendered with the chat template"


# --- shapes of one micro-batch ---------------------------------------------------------------------

def train_rows(r: RLPlan, prompts: int) -> int:
    return prompts if r.share_prompts else prompts * r.generations


def row_len(r: RLPlan, prompt: float) -> float:
    return prompt + (r.generations if r.share_prompts else 1) * r.completion_tokens


def train_tokens(r: RLPlan, prompts: int, prompt: float) -> float:
    """Tokens through the decoder in one training micro-batch of `prompts` prompts (shared prompts once per group)."""
    return train_rows(r, prompts) * row_len(r, prompt)


# --- memory ----------------------------------------------------------------------------------------

def loss_term(b, shape, plan) -> None:
    """The chunked head over the completion tokens only (policy.py): one (rows, V) fp32 chunk of logits
    and its softmax (the entropy), plus the gathered hidden rows and their gradient."""
    from ..train.losses import CHUNK_ELEMENTS
    from .activations import DTYPE_BYTES

    r, a = plan.rl, DTYPE_BYTES[plan.precision]
    n = plan.micro_batch_size * r.generations * r.completion_tokens
    rows = max(1, min(plan.loss_chunk_size, CHUNK_ELEMENTS // shape.vocab, n))
    b.add("logits+loss", 2 * rows * shape.vocab * 4 + 2 * n * shape.hidden * a,
          f"fused chunked head over the {n:,} completion tokens: {rows:,} rows × {shape.vocab:,} vocab × 4 B × 2 "
          f"(logits, softmax for the entropy) + hidden gather and its gradient (2 × {n:,} × {shape.hidden} × {a} B)", "transient")


def generation_terms(b, shape, plan) -> None:
    """The decode of all n·G rows of a step at once: the preallocated KV cache and the sampler's buffers.
    With `rl.generator: vllm` the engine holds its own copy of the weights and its KV cache in the
    fraction of the GPU it is given, for the whole run: not modelled, said in the breakdown (and its
    decode time is not modelled either: the built-in decode's is shown)."""
    from .activations import DTYPE_BYTES

    r, a = plan.rl, DTYPE_BYTES[plan.precision]
    if r.vllm_memory:
        b.add("vllm engine", 0, f"NOT MODELLED: vLLM takes rl.vllm_gpu_memory = {r.vllm_memory:g} of the GPU (its weights and "
              "KV cache) beside this peak; the generation time shown is the built-in decode's")
        return
    prompts = plan.micro_batch_size * plan.grad_accum_steps
    R, T = prompts * r.generations, r.prompt_tokens_max + r.max_new_tokens
    b.add("kv cache", 2 * shape.layers * shape.kv_width * T * R * a,
          f"generation: 2 (k,v) × {shape.layers} layers × {shape.kv_width} kv width × {T} positions (longest prompt "
          f"{r.prompt_tokens_max} + max_new_tokens {r.max_new_tokens}) × {R} rows ({prompts} prompts × {r.generations}) × {a} B",
          "generation")
    V = shape.vocab
    prefill = prompts * r.prompt_tokens_max * (3 * shape.intermediate + 4 * shape.hidden) * a
    b.add("decode buffers", R * V * (8 + 2 * 4) + prefill,
          f"sampler: {R} rows × {V:,} vocab × (8 B fp64 noise + 2 × 4 B logits) + the prefill's largest layer "
          f"transients ({prompts} prompts × {r.prompt_tokens_max} tokens, no grad)", "generation")


def reward_model_terms(b, r: RLPlan) -> None:
    """A `{reward_model: RUN_DIR}` reward loads that run's model (fp32, score head) beside the policy. A run
    whose config cannot be read adds a 0 term that says so (and no time: core.py skips it)."""
    from ..errors import UserError

    for run in r.reward_models:
        try:
            shape, quant = reward_model_shape(run)
        except (UserError, OSError, ValueError) as e:  # a missing or broken run: said in the breakdown, the rest stands
            b.add(f"reward model {Path(run).name}", 0, f"not estimated: cannot read {run}/config.yaml ({type(e).__name__}: {e})")
            continue
        rest = shape.total_params - shape.linear_params - shape.head_params
        per = 0.5 + 1 / 64 if quant == "nf4" else 1.0 if quant == "int8" else 4.0
        b.add(f"reward model {Path(run).name}", per * shape.linear_params + 4 * rest,
              f"{shape.linear_params:,} linear params × {per:g} B ({quant if quant != 'none' else 'fp32'}) + {rest:,} "
              f"embedding/norm params × 4 B (its LM head is a score head)")


@lru_cache(maxsize=8)  # the largest-micro-batch search rebuilds the breakdown many times
def reward_model_shape(run: str):
    from ..config import load_config
    from .shapes import model_shape

    rc = load_config(Path(run) / "config.yaml", [])
    return model_shape(rc.model.path, rc.model.trust_remote_code), rc.model.quantization


# --- time ------------------------------------------------------------------------------------------

def _forward_flops(shape, tokens: float, head_tokens: float, context: float, linear_params: int | None = None) -> float:
    """2 FLOPs per decoder-linear parameter per token, attention over `context` positions, and the
    vocabulary projection on `head_tokens` only."""
    head = shape.matmul_params - shape.linear_params
    attn = 4 * shape.heads * shape.head_dim * context * shape.layers
    return tokens * (2 * (shape.linear_params if linear_params is None else linear_params) + attn) + head_tokens * 2 * head


def step_time(shape, plan, trainable: int, device, util: float, weight_bytes: int, reward_shapes: list) -> tuple[dict, dict]:
    """({phase: seconds per optimizer step}, {part: FLOPs per optimizer step}) of one process; generation
    and scoring happen once per `reuse` steps, so a step carries 1/reuse of them."""
    r = plan.rl
    rate = util * device.peak_flops(plan.precision)
    P, C, G = r.prompt_tokens, r.completion_tokens, r.generations
    n = plan.micro_batch_size * plan.grad_accum_steps  # prompts per step
    R = n * G
    fl: dict[str, float] = {}
    # Generation, once per reuse. Each decode forward reads all weights once (bandwidth and overhead
    # bound on the CPU) and does per-row FLOPs (the full vocabulary projection for every row).
    fl["prefill"] = _forward_flops(shape, n * P, n, P / 2)
    fl["decode"] = max(C - 1, 0) * _forward_flops(shape, R, R, P + C / 2)
    if device.kind == "cpu":
        fixed = weight_bytes / CPU_DECODE_BYTES_PER_S
    else:
        fixed = weight_bytes / GPU_DECODE_BYTES_PER_S + shape.layers * GPU_DECODE_LAYER_S
    gen = (fl["prefill"] + fl["decode"]) / rate + max(C - 1, 0) * fixed
    # Scoring, once per rollout: no-grad forwards over the training layout.
    tokens = plan.grad_accum_steps * train_tokens(r, plan.micro_batch_size, P)
    context = (P + C) / 2
    one = _forward_flops(shape, tokens, R * C, context)
    fl["policy scoring"] = one if r.policy_pass else 0.0
    fl["reference"] = one * r.reference_every
    fl["reward model"] = sum(_forward_flops(s, R * (P + C), 0, (P + C) / 2, s.linear_params) for s in reward_shapes)
    score = (fl["policy scoring"] + fl["reference"] + fl["reward model"]) / rate
    # Training, every step: forward, backward (LoRA: input gradients + 6 FLOPs per adapter parameter
    # per token; full: 2x forward), gradient checkpointing's recomputation.
    fl["forward"] = one
    fl["backward"] = 2 * one if plan.full else one + tokens * 6 * trainable
    fl["recompute"] = one if plan.checkpointing else 0.0
    train = (fl["forward"] + fl["backward"] + fl["recompute"]) / rate
    for k in ("prefill", "decode", "policy scoring", "reference", "reward model"):
        fl[k] /= r.reuse  # per optimizer step, as the training parts
    fl["total"] = sum(fl.values())
    return {"generation": gen / r.reuse, "scoring": score / r.reuse, "training": train}, fl
