"""Houlsby bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP",
Fig. 2): after a sub-layer, h ← h + W_up · f(W_down · h + b_down) + b_up, with W_down: d → s,
W_up: s → d, s ≪ d, inserted after each layer's attention block and/or MLP.

Why hand-written: PEFT (0.21) has no bottleneck adapter, and the `adapters` library (AdapterHub)
1.3.0 requires `transformers ~=4.57.6` (this project runs transformers 5) and patches the model
classes with its own mixins, a second model abstraction under the one training loop. The module
itself is ~40 lines of torch.

How it attaches: each adapter is a child module of the block it follows (`…self_attn.bottleneck`,
`…mlp.bottleneck`), applied by a forward hook on that block, so the base model's own parameter names
and forward code are untouched, DDP/checkpoints see ordinary parameters, and removing the adapters
is removing the hooks. W_up and b_up start at zero, so at step 0 the model computes exactly what the
base computes (the residual makes the adapter the identity).

Saved as `adapter/bottleneck.json` (the options + the base model path) and
`adapter/adapter_model.safetensors` (the adapter parameters and any `modules_to_save`, fp32), the
same directory a PEFT adapter uses; `load_bottleneck` puts them back on a freshly loaded base.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import BottleneckOptions
from ..errors import UserError

CONFIG_NAME = "bottleneck.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    def __init__(self, d_model: int, size: int, nonlinearity: str = "relu"):
        super().__init__()
        self.down = nn.Linear(d_model, size)
        self.act = _ACTIVATIONS[nonlinearity]()
        self.up = nn.Linear(size, d_model)
        nn.init.normal_(self.down.weight, std=0.02)  # Houlsby: near-identity init
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return h + self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


def _after_block(module: nn.Module, args, output):
    # Attention blocks return (hidden, attn_weights, ...); MLPs return the hidden states.
    if isinstance(output, tuple):
        return (module.bottleneck(output[0]),) + output[1:]
    return module.bottleneck(output)


def _blocks(model, after: list[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention / MLP block of the decoder layers, in layer order."""
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise UserError(f"adapter.type: adapter needs a decoder with `.layers`; {type(model).__name__} has none")
    attrs = {"attention": ("self_attn", "attention", "attn"), "mlp": ("mlp", "feed_forward", "ffn")}
    found = []
    for i, layer in enumerate(layers):
        for where in after:
            name = next((a for a in attrs[where] if isinstance(getattr(layer, a, None), nn.Module)), None)
            if name is None:
                raise UserError(f"adapter.bottleneck.after: {where}: layer {i} ({type(layer).__name__}) has no "
                                f"{' / '.join(attrs[where])} block; use the other position")
            found.append((f"{i}.{name}", getattr(layer, name)))
    return found


def _set_modules_to_save(model, names: list[str]) -> None:
    for name in names:
        hits = [m for full, m in model.named_modules() if full == name or full.endswith("." + name)]
        if not hits:
            raise UserError(f"`adapter.modules_to_save`: {name!r} is not a module of this model")
        for m in hits:
            m.requires_grad_(True)


def add_bottleneck_adapters(model, opts: BottleneckOptions, modules_to_save: list[str] | tuple = ()):
    """Freeze `model`, attach trainable bottlenecks, return the same model object."""
    if is_bottleneck_model(model):
        raise UserError("this model already carries bottleneck adapters")
    model.requires_grad_(False)
    d_model = model.config.hidden_size
    for _, block in _blocks(model, opts.after):
        ref = next(block.parameters())
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        block.bottleneck = Bottleneck(d_model, opts.size, opts.nonlinearity).to(device=ref.device, dtype=dtype)
        block.register_forward_hook(_after_block)
    _set_modules_to_save(model, list(modules_to_save))
    model.bottleneck_config = {"size": opts.size, "after": list(opts.after), "nonlinearity": opts.nonlinearity,
                               "modules_to_save": list(modules_to_save)}
    return model


def is_bottleneck_model(model) -> bool:
    return hasattr(model, "bottleneck_config")


def save_bottleneck(model, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt", "tunesmith": "bottleneck"})
    meta = {**model.bottleneck_config, "base_model_name_or_path": model.config._name_or_path}
    tmp = out_dir / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out_dir / CONFIG_NAME)


def load_bottleneck(model, adapter_dir: Path, trainable: bool = False):
    """Attach the saved adapters to a freshly loaded base `model`; every saved tensor must find its slot."""
    adapter_dir = Path(adapter_dir)
    meta = json.loads((adapter_dir / CONFIG_NAME).read_text())
    opts = BottleneckOptions(size=meta["size"], after=meta["after"], nonlinearity=meta["nonlinearity"])
    add_bottleneck_adapters(model, opts, meta.get("modules_to_save", []))
    saved = load_file(str(adapter_dir / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        diff = sorted(set(saved) ^ expected)[:4]
        raise UserError(f"{adapter_dir / WEIGHTS_NAME} does not fit this base model ({len(set(saved) ^ expected)} "
                        f"tensor names differ, e.g. {diff}); load it on {meta.get('base_model_name_or_path')}")
    with torch.no_grad():
        for n, t in saved.items():
            if params[n].shape != t.shape:
                raise UserError(f"{adapter_dir / WEIGHTS_NAME}: {n} has shape {tuple(t.shape)}, the model expects "
                                f"{tuple(params[n].shape)}; load it on {meta.get('base_model_name_or_path')}")
            params[n].copy_(t.to(params[n].dtype))
    model.requires_grad_(False)
    if trainable:
        for n in expected:
            params[n].requires_grad_(True)
    return model
