"""`rl.generator: vllm`: the rollout's completions sampled by a vLLM engine colocated with training.

The engine is made once at setup: vLLM's offline `LLM` on the base model directory, on the same GPU
as training, with `gpu_memory_utilization = rl.vllm_gpu_memory` (its weights + KV cache; the rest is
left to training). Each rollout hands it the current policy as a LoRA adapter, never merged: the
trainable adapter is saved (PEFT `save_pretrained`, safetensors, adapter weights only) to a
directory of its own (deleted once vLLM has generated from it) and passed as a `LoRARequest` with a fresh integer id, so vLLM loads the new
weights instead of its cached copy of an older adapter. The base weights are never touched (merging
into them and unmerging after is the weight-sync bug peers have had: rounding drift in bf16).

Each completion row gets its own `SamplingParams` seeded with `step_seed(seed, step, row)`, as the
built-in sampler seeds its per-row generators, so a kill + resume samples the same completions
again (vLLM's own RNG: reproducible within vLLM, not token-identical to `rl.generator: hf`).
The outputs become the same `Completion` objects as the built-in sampler's: token ids (the EOS or
stop token included), truncated = vLLM's finish_reason "length". Everything after the rollout
(rewards, the training forward that recomputes log-probs) is unchanged.

vLLM is imported here only (lazily): it is an optional GPU dependency.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ....errors import ConfigError
from ....serve.vllm import _VLLM_RANKS
from ...reference import inner
from .generation import Completion, step_seed

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"`rl.generator: vllm` needs vLLM, which does not import here ({e}); install it in an "
                          "environment whose torch matches vLLM's wheel (`pip install vllm`, on a CUDA machine), or set "
                          "`rl.generator: hf` (the built-in sampler)") from None
    return vllm


def max_lora_rank(adapter_cfg) -> int:
    """The smallest `max_lora_rank` vLLM accepts that fits every rank of the adapter (rank_pattern included)."""
    top = max([adapter_cfg.r, *adapter_cfg.rank_pattern.values()])
    rank = next((r for r in _VLLM_RANKS if r >= top), None)
    if rank is None:
        raise ConfigError(f"`adapter.r` {top} is above vLLM's largest max_lora_rank {_VLLM_RANKS[-1]}; "
                          "lower it or set `rl.generator: hf`")
    return rank


class VLLMGenerator:
    """One colocated vLLM engine per process; `sample` has the built-in sampler's contract."""

    def __init__(self, cfg, ctx, eos_ids: list[int]):
        device = getattr(ctx.device, "type", str(ctx.device))
        if device != "cuda":
            raise ConfigError(f"`rl.generator: vllm` runs vLLM on a CUDA GPU; this run's device is {device}. "
                              "Set `rl.generator: hf` (the built-in sampler) on this machine")
        if cfg.adapter.type != "lora":  # check_rl refuses this at load; kept for objects built by hand
            raise ConfigError("`rl.generator: vllm` hands the policy to vLLM as a LoRA adapter; it needs `adapter.type: lora`")
        self.vllm = _import_vllm()
        from vllm.lora.request import LoRARequest

        self.LoRARequest = LoRARequest
        self.rl, self.seed, self.eos_ids = cfg.rl, cfg.train.seed, list(eos_ids)
        # Per process: 2 processes must not write each other's adapter directory.
        self.prefix = Path(cfg.output_dir) / f"rollout_adapter.rank{ctx.process_index}"
        for old in self.prefix.parent.glob(self.prefix.name + ".*"):  # a killed run's leftovers (our names only)
            shutil.rmtree(old, ignore_errors=True)
        self.next_id = 0
        self.llm = self.vllm.LLM(
            model=str(cfg.model.path), tokenizer=str(cfg.model.path), dtype=_DTYPES[cfg.compute_precision()],
            seed=cfg.train.seed, enable_lora=True, max_loras=1, max_lora_rank=max_lora_rank(cfg.adapter),
            gpu_memory_utilization=cfg.rl.vllm_gpu_memory,
            max_model_len=cfg.rl.max_prompt_length + cfg.rl.max_new_tokens,
            trust_remote_code=cfg.model.trust_remote_code)

    def save_adapter(self, policy) -> Path:
        """The policy's current adapter, in a directory of this rollout's own (a fresh id each time)."""
        self.next_id += 1
        path = Path(f"{self.prefix}.{self.next_id}")
        peft_model = inner(policy).model
        peft_model.save_pretrained(str(path), safe_serialization=True)  # the adapter's weights only
        return path

    def params(self, n: int, step: int, first_row: int) -> list:
        rl = self.rl
        return [self.vllm.SamplingParams(
            n=1, seed=step_seed(self.seed, step, first_row + i), temperature=rl.temperature, top_p=rl.top_p,
            top_k=-1, min_p=0.0, repetition_penalty=1.0, max_tokens=rl.max_new_tokens, stop=list(rl.stop),
            stop_token_ids=list(self.eos_ids), include_stop_str_in_output=True, skip_special_tokens=True)
            for i in range(n)]

    def sample(self, policy, prompts: list[list[int]], *, step: int, first_row: int = 0) -> list[Completion]:
        """One completion per prompt, in prompt order; prompt i is row `first_row + i` of the step."""
        path = self.save_adapter(policy)
        request = self.LoRARequest(f"policy_{self.next_id}", self.next_id, str(path))
        try:
            outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts],
                                     sampling_params=self.params(len(prompts), step, first_row),
                                     lora_request=request, use_tqdm=False)
        finally:
            # vLLM loads an adapter before its requests run, and no later rollout asks for this id again:
            # the files are not needed once generate returns (nothing piles up in the run directory).
            shutil.rmtree(path, ignore_errors=True)
        if len(outs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(prompts)} prompts")
        return [to_completion(o) for o in outs]


def to_completion(request_output) -> Completion:
    """vLLM's RequestOutput (one completion: n=1) -> the built-in sampler's Completion."""
    (out,) = request_output.outputs
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended a rollout completion with finish_reason {out.finish_reason!r}")
    return Completion(list(out.token_ids), out.finish_reason == "length")
