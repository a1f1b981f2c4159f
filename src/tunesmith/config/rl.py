"""The `rl:` section of a run config: online RL (`method: grpo | rloo | ppo`).

Kept out of config.py so the RL keys live in one file; config.py holds only the `rl: RLConfig`
field and calls `check_rl(cfg)` from its validator for the keys that depend on other sections.
Validators never rewrite values; a bad combination raises with the key and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RL_METHODS = ("grpo", "rloo", "ppo")


class RLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_generations: int = Field(8, ge=1, description="Completions sampled per prompt: the group of GRPO / RLOO (>= 2); PPO may use 1.")
    max_new_tokens: int = Field(128, gt=0, description="Completion length cap; a completion that reaches it is truncated.")
    max_prompt_length: int = Field(512, gt=0, description="Prompts longer than this (tokens) are dropped and counted.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature; the training log-probs use the same temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling.")
    stop: list[str] = Field(default_factory=list, description="Stop strings besides EOS: a completion ends after the first one.")
    generator: Literal["hf", "vllm"] = Field("hf", description=(
        "Who samples the completions: hf (the built-in batched sampler, any device) or vllm (a vLLM engine colocated "
        "on the GPU, the LoRA adapter handed over each step, not merged; needs `pip install vllm`, CUDA and "
        "adapter.type: lora). Seeded per completion in both, but the two samplers draw different tokens."))
    vllm_gpu_memory: float = Field(0.3, gt=0.0, lt=1.0, description=(
        "rl.generator: vllm: the fraction of the GPU's memory vLLM takes (its weights and KV cache); training "
        "gets the rest."))
    rewards: list[Any] = Field(default_factory=lambda: ["gsm8k"], description=(
        "Reward functions: built-in names (gsm8k, regex, json_schema, length), `module:function` "
        "(f(prompts, completions, **columns) -> list[float]; module path relative to the working dir or importable), "
        "or {reward_model: RUN_DIR} (a `method: reward` run)."))
    reward_weights: list[float] = Field(default_factory=list, description="One weight per reward (default: all 1).")
    regex: str = Field(r"####\s*-?\d+", description="Built-in `regex` reward: 1 when the completion contains a match, else 0.")
    json_schema: dict | None = Field(None, description="Built-in `json_schema` reward: a JSON schema the completion must satisfy.")
    target_length: int = Field(64, gt=0, description="Built-in `length` reward: 1 - |completion chars - target_length| / target_length, at least -1.")
    beta: float = Field(0.0, ge=0.0, description="KL coefficient against the reference (the base; with LoRA the adapter disabled).")
    kl_estimator: Literal["k1", "k3"] = Field("k3", description="k1 = log(pi/ref); k3 = ref/pi - log(ref/pi) - 1 (Schulman's unbiased, >= 0).")
    kl_in: Literal["reward", "loss"] = Field("loss", description="Subtract beta*KL from the reward, or add it to the loss per token.")
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = Field("dapo", description=(
        "grpo: mean over each completion's tokens, then over completions; dr_grpo: sum over tokens / max_new_tokens; "
        "dapo: sum over tokens / all completion tokens of the step (every micro-batch and process)."))
    epsilon: float = Field(0.2, gt=0.0, description="Lower clip of the ratio: 1 - epsilon.")
    epsilon_high: float | None = Field(None, gt=0.0, description="Upper clip 1 + epsilon_high (DAPO clip-higher); default epsilon.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description=(
        "Divide advantages by the group's reward std (GRPO), the std over this process's batch, or not at all (Dr GRPO)."))
    num_iterations: int = Field(1, ge=1, description="Optimizer steps per generation batch (mu in the GRPO paper).")
    mask_truncated: bool = Field(False, description="Completions cut at max_new_tokens get no loss (DAPO overlong filtering).")
    samples_every: int = Field(10, ge=0, description="Write prompts, completions and rewards to samples.jsonl every N steps (0: never).")
    kl_every: int = Field(10, ge=0, description=(
        "At beta 0 the reference (the base, adapter disabled) only gives the logged `kl`: run its forward every N "
        "steps (1: every step; 0: never). With beta > 0 (or PPO's kl_target) it runs every step, as training needs it."))
    # PPO
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="PPO: discount.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="PPO: GAE lambda.")
    vf_coef: float = Field(0.1, ge=0.0, description="PPO: value-loss coefficient.")
    cliprange_value: float = Field(0.2, gt=0.0, description="PPO: clip of the value prediction around the rollout's.")
    ppo_epochs: int = Field(1, ge=1, description="PPO: optimizer passes over one rollout batch (like num_iterations).")
    whiten_advantages: bool = Field(True, description="PPO: normalise advantages to mean 0, std 1 over the batch's tokens.")
    kl_target: float | None = Field(None, gt=0.0, description=(
        "PPO: adaptive KL controller target (Ziegler et al.) in nats per completion (the sum over its tokens, logged "
        "as `kl_sequence`; `kl` is per token); None: fixed beta."))
    kl_horizon: int = Field(10000, gt=0, description=(
        "PPO: adaptive KL controller horizon, in completions: each step beta moves by at most 20% x (completions "
        "in the step / horizon). 10000 (Ziegler et al.'s, for batches of 512) barely moves beta in a run of a few "
        "hundred completions; for short runs use a horizon near a few steps' completions."))

    @field_validator("rewards")
    @classmethod
    def _reward_specs(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("give at least one reward, e.g. [gsm8k] or [my_rewards:score]")
        for spec in v:
            if isinstance(spec, dict):
                if not isinstance(spec.get("reward_model"), str) or not set(spec) <= {"reward_model", "debias_length"}:
                    raise ValueError(f"reward {spec!r}: a mapping must be {{reward_model: RUN_DIR}}, optionally with "
                                     "debias_length: true (or a preference-pairs file)")
                d = spec.get("debias_length", False)
                if not isinstance(d, (bool, str)) or d == "":
                    raise ValueError(f"reward {spec!r}: debias_length is true/false or a preference-pairs file")
            elif not isinstance(spec, str) or not spec:
                raise ValueError(f"reward {spec!r}: use a built-in name, module:function or {{reward_model: RUN_DIR}}")
        return v

    @model_validator(mode="after")
    def _weights_fit(self) -> RLConfig:
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"`rl.reward_weights` has {len(self.reward_weights)} values for {len(self.rewards)} rewards; give one per reward")
        return self

    def weights(self) -> list[float]:
        return self.reward_weights or [1.0] * len(self.rewards)

    def clip_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def check_rl(cfg) -> None:
    """Cross-section checks, called by RunConfig's validator: raises ValueError naming the key."""
    rl_set = cfg.rl.model_dump(exclude_defaults=True)
    if cfg.method not in RL_METHODS:
        if rl_set:
            raise ValueError(f"`rl.{next(iter(rl_set))}` is set but `method: {cfg.method}` is not online RL; "
                             f"remove the `rl:` section or set method to one of {', '.join(RL_METHODS)}")
        return
    if cfg.data.eval or cfg.data.eval_fraction > 0:
        raise ValueError(f"`method: {cfg.method}` has no eval loss (its rows are prompts); remove `data.eval` / "
                         "`data.eval_fraction` and measure the result with `tunesmith eval`")
    if cfg.train.eval_every or cfg.train.early_stopping_patience:
        raise ValueError(f"`train.eval_every` / `train.early_stopping_patience` need an eval loss, which `method: {cfg.method}` "
                         "does not have; set them to 0")
    if cfg.data.packing:
        raise ValueError(f"`data.packing` does not apply to `method: {cfg.method}` (completions are generated); set it to false")
    if cfg.adapter.is_prompt_learning():
        raise ValueError(f"`method: {cfg.method}` reads the backbone's hidden states directly; use adapter lora, dora, ia3 or none")
    if cfg.train.loss_chunk_size == 0:
        raise ValueError(f"`train.loss_chunk_size: 0` is for sft/pretrain; `method: {cfg.method}` always gathers log-probs in chunks")
    reuse = cfg.rl.ppo_epochs if cfg.method == "ppo" else cfg.rl.num_iterations
    if cfg.train.save_every and cfg.train.save_every % reuse:
        key = "rl.ppo_epochs" if cfg.method == "ppo" else "rl.num_iterations"
        raise ValueError(f"`train.save_every` ({cfg.train.save_every}) must be a multiple of `{key}` ({reuse}): a checkpoint "
                         "inside a reused generation batch could not be resumed exactly")
    _check_generator(cfg, rl_set)
    if cfg.method in ("grpo", "rloo") and cfg.rl.num_generations < 2:
        raise ValueError(f"`method: {cfg.method}` compares completions within a group: `rl.num_generations` must be >= 2")
    if cfg.method == "ppo":
        if not any(isinstance(r, dict) for r in cfg.rl.rewards) and "rewards" not in rl_set:
            raise ValueError("`method: ppo` scores with a reward model: set `rl.rewards: [{reward_model: RUN_DIR}]` "
                             "(or any reward list)")
    elif cfg.rl.kl_target is not None:
        raise ValueError("`rl.kl_target` (adaptive KL) is for `method: ppo`; GRPO/RLOO use a fixed `rl.beta`")


def _check_generator(cfg, rl_set: dict) -> None:
    """`rl.generator: vllm` hands vLLM the base model directory and the adapter as a LoRA adapter:
    what vLLM's LoRA cannot hold, or a base that differs from `model.path`, is refused here."""
    if cfg.rl.generator != "vllm":
        if "vllm_gpu_memory" in rl_set:
            raise ValueError("`rl.vllm_gpu_memory` applies to `rl.generator: vllm`; remove it or set the generator")
        return
    if cfg.adapter.type != "lora":
        raise ValueError(f"`rl.generator: vllm` hands the policy to vLLM as a LoRA adapter (not merged), so it needs "
                         f"`adapter.type: lora`, not {cfg.adapter.type}; use adapter.type: lora or `rl.generator: hf`")
    if cfg.adapter.modules_to_save:
        raise ValueError("`rl.generator: vllm`: vLLM's LoRA cannot load `adapter.modules_to_save` (modules trained in "
                         "full); remove them or use `rl.generator: hf`")
    if cfg.adapter.init in ("pissa", "olora"):
        raise ValueError(f"`rl.generator: vllm` loads the base from `model.path`, but `adapter.init: {cfg.adapter.init}` "
                         "rewrites the base weights; use init: default/gaussian or `rl.generator: hf`")
