"""`estimate(...)`: the run config -> the memory breakdown, the peak, what it fits on, the largest
micro-batch that fits, and the time per step and epoch. Nothing is loaded but the model's config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, load_config
from ..errors import ConfigError
from .devices import CPU_GFLOPS, CPU_OVERHEAD, GPU_OVERHEAD, LISTED, Device, GPUS, cpu_threads, find_device, this_cpu
from . import rl
from .flops import flops_per_micro_batch
from .memory import Breakdown, breakdown, trainable_count
from .plan import Plan, plan_from_config
from .shapes import ModelShape, model_shape

# Model FLOPs utilisation used for time. CPU: calibrated from a measured tunesmith run on this machine
# (issue 17: SmolLM2-135M LoRA, 4 x 512 packed tokens, ~185 tokens/s steady on an idle machine =
# 638 MFLOP/token x 185 = 118 GFLOP/s, 0.51 of the 230 GFLOP/s bound); bench/estimate_accuracy.py
# records the achieved fraction of every run. GPU: 0.40, the usual MFU of eager PyTorch training with
# SDPA (not calibrated here: no GPU run was measured).
UTILISATION = {"cpu": 0.5, "gpu": 0.40}
MAX_BATCH = 1 << 14


@dataclass
class Estimate:
    shape: ModelShape
    plan: Plan
    device: Device
    breakdown: Breakdown
    adapter_params: int
    adapter_formula: str
    fits: dict[str, dict]
    max_micro_batch: int
    flops: dict[str, float]
    utilisation: float
    step_seconds: float
    run_seconds: float | None
    epoch_seconds: float | None
    phases: dict[str, float] | None = None  # online RL: seconds per step of generation, scoring, training

    @property
    def peak_bytes(self) -> int:
        return self.breakdown.device_bytes()

    def to_json(self) -> dict:
        from .render import as_json

        return as_json(self)

    def render(self) -> str:
        from .render import as_text

        return as_text(self)


def _adapter(shape: ModelShape, plan: Plan) -> tuple[int, str, list[str]]:
    if plan.full:
        return 0, "full fine-tuning", []
    from ..adapters import closed_form_trainable, resolve_target_modules

    n, formula = closed_form_trainable(shape.meta_model, plan.adapter)
    targets = resolve_target_modules(shape.meta_model, plan.adapter.target_modules) if plan.adapter.type in ("lora", "dora", "ia3") else []
    return n, formula, targets


def _max_micro_batch(shape, plan, n_adapter, targets, overhead, capacity) -> int:
    fits = lambda b: breakdown(shape, plan.with_batch(b), n_adapter, targets, overhead).device_bytes() <= capacity  # noqa: E731
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= MAX_BATCH and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_BATCH + 1)
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def estimate_plan(shape: ModelShape, plan: Plan, device: Device, utilisation: float | None = None,
                  overhead: int | None = None) -> Estimate:
    n_adapter, formula, targets = _adapter(shape, plan)
    if overhead is None:
        overhead = GPU_OVERHEAD if device.kind == "gpu" else CPU_OVERHEAD
    b = breakdown(shape, plan, n_adapter, targets, overhead)
    # Rows of the other kind (GPU classes when estimating the CPU, and back) are filled by `estimate`,
    # which has the config to resolve dtypes for that kind; here only this kind's rows.
    fits = {}
    for dev in [this_cpu()] + [GPUS[k] for k in LISTED]:
        same = (dev.kind == "gpu") == (plan.target == "gpu")
        fits[dev.name] = {"capacity_bytes": dev.capacity, "peak_bytes": b.device_bytes() if same else None,
                          "fits": b.device_bytes() <= dev.capacity if same else None}
    max_b = _max_micro_batch(shape, plan, n_adapter, targets, overhead, device.capacity)
    trainable = trainable_count(shape, plan, n_adapter)
    util = utilisation if utilisation is not None else UTILISATION[device.kind]
    phases = None
    if plan.rl is not None:  # online RL: a rollout and its scoring besides the training passes (rl.py)
        weight_bytes = b.get("weights") + 4 * n_adapter  # what each decode forward reads
        reward_shapes = [rl.reward_model_shape(r)[0] for r in plan.rl.reward_models if b.get(f"reward model {Path(r).name}")]
        phases, fl = rl.step_time(shape, plan, trainable, device, util, weight_bytes, reward_shapes)
        step = sum(phases.values())
    else:
        fl = flops_per_micro_batch(shape, plan, trainable)
        step = fl["total"] * plan.grad_accum_steps / (util * device.peak_flops(plan.precision))
    run = step * plan.max_steps if plan.max_steps else None
    epoch = None
    if plan.dataset_rows:
        rows_per_step = plan.micro_batch_size * plan.grad_accum_steps * plan.gpus
        epoch = step * max(1, plan.dataset_rows // rows_per_step)
    return Estimate(shape, plan, device, b, n_adapter, formula, fits, max_b, fl, util, step, run, epoch, phases)


def _fill_fits(est: Estimate, cfg: RunConfig, shape: ModelShape, kwargs: dict) -> None:
    """The classes of the other kind (GPU when estimating the CPU, and back) are judged as the run would
    be there: auto dtypes resolve to bf16 on a GPU and fp32 on the CPU, one process each."""
    other = "cpu" if est.plan.target == "gpu" else "gpu"
    try:
        plan = plan_from_config(cfg, target=other, **{**kwargs, "gpus": 1})
    except ConfigError as e:  # e.g. fp16 compute has no CPU form
        for row in est.fits.values():
            if row["peak_bytes"] is None:
                row["why_not"] = str(e)
        return
    n_adapter, _, targets = _adapter(shape, plan)
    peak = breakdown(shape, plan, n_adapter, targets, GPU_OVERHEAD if other == "gpu" else CPU_OVERHEAD).device_bytes()
    for row in est.fits.values():
        if row["peak_bytes"] is None:
            row["peak_bytes"], row["fits"] = peak, peak <= row["capacity_bytes"]


def estimate(config: str | Path | RunConfig | None = None, overrides: list[str] | None = None, *, device: str = "cpu",
             gpus: int = 1, sharding: str | None = None, offload: str = "none", generation_tokens: int = 0,
             dataset_rows: int = 0, utilisation: float | None = None, cpu_gflops: float = CPU_GFLOPS,
             prompt_tokens: int | None = None) -> Estimate:
    """Estimate a `tunesmith train` run of `config` (+ dotted overrides) on `device` × `gpus`. Online RL:
    `generation_tokens` is the expected completion length, `prompt_tokens` the prompt length (default:
    read from the data)."""
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    if isinstance(config, RunConfig) and overrides:
        raise ConfigError("give overrides with a config path, not with a RunConfig object")
    dev = find_device(device, cpu_gflops, cpu_threads())
    if dev.kind == "cpu" and gpus > 1:
        raise ConfigError("--gpus > 1 needs a GPU --device (e.g. --device A100-80GB --gpus 4)")
    if utilisation is not None and not 0 < utilisation <= 1:
        raise ConfigError(f"--utilisation {utilisation}: must be in (0, 1]")
    if prompt_tokens is not None and prompt_tokens < 1:
        raise ConfigError(f"--prompt-tokens {prompt_tokens}: must be >= 1")
    kwargs = dict(gpus=gpus, sharding=sharding, offload=offload, generation_tokens=generation_tokens, dataset_rows=dataset_rows,
                  prompt_tokens=None if prompt_tokens is None else (prompt_tokens, prompt_tokens))
    plan = plan_from_config(cfg, target=dev.kind, **kwargs)
    if plan.rl is not None:  # the other device kind's fits row reuses the prompts read once
        kwargs["prompt_tokens"] = (plan.rl.prompt_tokens, plan.rl.prompt_tokens_max)
    shape = model_shape(cfg.model.path, cfg.model.trust_remote_code)
    est = estimate_plan(shape, plan, dev, utilisation)
    _fill_fits(est, cfg, shape, kwargs)
    return est
