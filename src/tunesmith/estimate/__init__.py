"""`tunesmith estimate`: memory and time of a training run before it starts, from the run config and
the model's config.json alone (the model is built on the meta device). See docs/estimate.md.

    shapes.py       model shapes and parameter counts by role (meta device)
    plan.py         the run config resolved for a target device
    activations.py  what autograd saves per decoder layer
    memory.py       weights, adapter, gradients, optimizer, loss, reference, sharding, framework
    flops.py        FLOPs per micro-batch -> time
    rl.py           online RL (grpo/rloo/ppo): rollout, scoring passes, group rows, KV cache
    devices.py      device classes (capacity, peak FLOP/s) and this machine
    core.py         estimate(): all of it, the fits table and the largest micro-batch
    render.py       text and JSON
"""

from .core import Estimate, estimate, estimate_plan
from .plan import Plan, plan_from_config, shortcut_overrides
from .shapes import ModelShape, model_shape

__all__ = ["Estimate", "estimate", "estimate_plan", "Plan", "plan_from_config", "shortcut_overrides", "ModelShape", "model_shape"]
