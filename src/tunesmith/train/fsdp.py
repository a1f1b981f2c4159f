"""Fully sharded data parallel (PyTorch FSDP2, `fully_shard`) for `train.fsdp: true`.

Why our own few lines rather than accelerate's FSDP plugin: accelerate turns FSDP on only for GPU
process groups (its state machine keeps MULTI_CPU as plain DDP), so a CPU run, and with it every
test this project can run, would never shard. `fully_shard` itself runs on gloo as well as NCCL.
When `accelerate launch` already configured FSDP (GPU), accelerate shards and this module only
supplies the sharding-aware state-dict and gradient-sync helpers, which both paths need.

Each decoder layer is one FSDP group (all-gathered just before it runs, freed after), the wrapper
with the embeddings and the LM head is the root group. Parameters stay fp32 (master weights);
compute precision still comes from autocast. Gradients are reduce-scattered as a mean over
processes, like DDP's all-reduce, so the loop's `loss * world / global_units` is unchanged.

State dicts: checkpoints and the final result hold FULL tensors (gathered, rank 0 writes), so a
sharded run writes the same files as a single process and resumes on any number of processes.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def shard(wrapper: nn.Module, decoder_layers: list[nn.Module]) -> nn.Module:
    """Apply FSDP2 in place: one group per decoder layer, then the root. Returns `wrapper`."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers:
        fully_shard(layer)
    fully_shard(wrapper)
    return wrapper


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the `layers` ModuleList of a Llama/Mistral/Qwen2 body (causal LM or
    scalar-head model, under PEFT or not)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks") and len(mod):
            return list(mod)
    raise ValueError(f"train.fsdp: found no list of decoder layers in {type(model).__name__}")


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


@contextlib.contextmanager
def no_grad_sync(module: nn.Module, accelerator):
    """Skip the gradient reduction of this micro-batch (accumulation): DDP's `no_sync`, FSDP2's
    `set_requires_gradient_sync(False)` (gradients then accumulate unsharded until the last one)."""
    if hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(module):
            yield


def as_float(norm) -> float:
    """clip_grad_norm_ over sharded gradients returns a DTensor; its value is the global norm."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if callable(full) else norm)


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter as a full CPU tensor. Collective when sharded: call on every rank."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            t = p.detach()
            t = t.full_tensor() if hasattr(t, "full_tensor") else t
            out[name] = t.to("cpu", copy=True).contiguous()
    return out


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict as full CPU tensors on rank 0 (empty on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with full tensors keyed by parameter name, on rank 0. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim_state: dict) -> None:
    """Scatter full trainable weights and optimizer state (as saved above) into a sharded model.
    Every rank reads the same files, so no broadcast is needed."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=opts)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=optim_state, options=StateDictOptions(full_state_dict=True))
