"""A LoRA linear layer as one autograd function: the same saved tensors, far fewer big temporaries.

PEFT computes `base(x) + lora_B(lora_A(x)) * scaling`: four (tokens, d_out) tensors in the forward
(the base output, B's output, its scaled copy, the sum) and, in the backward, the scaled gradient,
the base layer's input gradient, the LoRA path's input gradient and their sum. Only the small
(tokens, r) A output and the input x are needed for backward. On the CPU every one of those
temporaries is a fresh allocation each step, and with glibc's mmap threshold pinned
(train/host_memory.py) a fresh mapping that the kernel faults in and zeroes page by page: on
SmolLM2-135M at 4 x 512 tokens they were ~9 of the ~16 GiB of pages faulted per step.

`LoraLinear` computes out = x W^T (+ b), then adds scaling * (x A^T) B^T into it in place (one
addmm), and in backward writes grad W (the input gradient) and adds the LoRA path's into the same
buffer: one (tokens, d_out) allocation in the forward and one (tokens, d_in) in the backward. It
saves x and x A^T, which PEFT's path saves too. Same math, reassociated only inside the BLAS
accumulate (a few ulp; tests/unit/test_lora_linear.py checks values and gradients against PEFT).

Applied by `fuse_lora_linears` to PEFT `lora.Linear` layers over a plain `nn.Linear`. At call time
it falls back to PEFT's own forward for anything else: dropout > 0, more than one active adapter,
merged or disabled adapters, DoRA and other variants, a LoRA bias, a trainable base weight,
mixed dtypes, autocast, or extra forward arguments (e.g. `adapter_names`).
"""

from __future__ import annotations

import types

import torch
from torch import nn


class LoraLinear(torch.autograd.Function):
    """x (..., d_in) -> x W^T + b + scaling (x A^T) B^T with W, b frozen and A, B trainable."""

    @staticmethod
    def compute(x, weight, bias, lora_a, lora_b, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, x A^T): the forward's arithmetic, also run directly when no gradient is recorded."""
        x2 = x.reshape(-1, x.shape[-1])
        a = x2 @ lora_a.T  # (N, r)
        out = x2 @ weight.T if bias is None else torch.addmm(bias, x2, weight.T)
        out.addmm_(a, lora_b.T, alpha=scaling)  # in place: no (N, d_out) temporary for the LoRA path
        return out.view(*x.shape[:-1], out.shape[-1]), a

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        out, a = LoraLinear.compute(x, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, a)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_a, lora_b, a = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])  # (N, d_out)
        grad_a = (g @ lora_b).mul_(s)  # (N, r): d loss / d (x A^T)
        grad_x = grad_lora_a = grad_lora_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(grad_a, lora_a).view(x.shape)  # base and LoRA paths in one buffer
        if ctx.needs_input_grad[3]:
            grad_lora_a = grad_a.T @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[4]:
            grad_lora_b = (g.T @ a).mul_(s)
        return grad_x, None, None, grad_lora_a, grad_lora_b, None


def _fusable_call(layer, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The one active adapter's name when `layer`'s forward can run as `LoraLinear`, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or torch.is_autocast_enabled(x.device.type):
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    base, lora_a, lora_b = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if not isinstance(layer.lora_dropout[name], nn.Identity) or lora_b.bias is not None or lora_a.bias is not None:
        return None
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return None
    dtypes = {x.dtype, base.weight.dtype, lora_a.weight.dtype, lora_b.weight.dtype}
    if base.bias is not None:
        dtypes.add(base.bias.dtype)
    return name if len(dtypes) == 1 else None


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _fusable_call(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    args = (x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]))
    if not torch.is_grad_enabled():  # generation, reference passes: the same arithmetic without autograd's bookkeeping
        return LoraLinear.compute(*args)[0]
    return LoraLinear.apply(*args)


def fuse_lora_linears(model: nn.Module) -> int:
    """Route every PEFT `lora.Linear` over a plain `nn.Linear` through `LoraLinear`; returns how many."""
    try:
        from peft.tuners.lora.layer import Linear as PeftLoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, PeftLoraLinear) and type(getattr(module, "base_layer", None)) is nn.Linear:
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n
