"""Layer-by-layer calibration for GPTQ and AWQ.

The calibration batch is run up to the first decoder layer once; then each layer in turn collects
its linears' input statistics, is quantized, and is run again (now quantized) to produce the
inputs of the next layer, so every layer is calibrated on what the quantized model before it
really feeds it (as in the GPTQ paper and AutoAWQ). Memory: one layer's activations, never the model's.
"""

from __future__ import annotations

import torch
from ..console import progress_bar

from ..errors import UserError
from .awq import ActivationStats, fold_scale, llama_scale_groups, search_scale
from .gptq import HessianAccumulator, gptq_quantize, rtn_quantize


class _Stop(Exception):
    """Raised by the capture hook: the forward ends once layer 0's inputs are recorded."""


def decoder_layers(model) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise UserError(f"GPTQ/AWQ here support Llama-family decoders (model.model.layers); "
                        f"{type(model).__name__} has none. Use --method int8 or nf4 for it")
    return layers


@torch.no_grad()
def capture_inputs(model, ids: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, dict]]:
    """(hidden_states, kwargs) that the first decoder layer receives, per calibration batch."""
    layer0 = decoder_layers(model)[0]
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.pop("hidden_states")
        captured.append((x, dict(kwargs)))
        raise _Stop

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, len(ids), batch_size):
            try:
                model(input_ids=ids[i: i + batch_size].to(model.device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def _run(layer, captured):
    outs = []
    for x, kw in captured:
        y = layer(x, **kw)
        outs.append((y[0] if isinstance(y, tuple) else y, kw))
    return outs


def _linears(layer) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}


def _collect(layer, captured, make_stat):
    """Run the layer over the batch with a hook on each linear feeding `stat.add(input)`."""
    stats, handles = {}, []
    for name, lin in _linears(layer).items():
        stats[name] = make_stat(lin.in_features)
        handles.append(lin.register_forward_hook(lambda m, a, o, s=stats[name]: s.add(a[0])))
    try:
        _run(layer, captured)
    finally:
        for h in handles:
            h.remove()
    return stats


@torch.no_grad()
def quantize_model_layers(model, ids: torch.Tensor, method: str, bits: int, group_size: int, act_order: bool,
                          batch_size: int = 8) -> tuple[dict[str, dict], dict]:
    """Quantize every decoder-layer linear in place (weights become their dequantized values).

    Returns ({module name: quantizer result}, {"awq_rtn_loss": ..., "awq_loss": ...} diagnostics)."""
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    captured = capture_inputs(model, ids, batch_size)
    results, diag = {}, {"loss": 0.0, "rtn_loss": 0.0}
    for idx, layer in enumerate(progress_bar(layers, desc=f"{method} layers", unit="layer")):
        if method == "gptq":
            stats = _collect(layer, captured, HessianAccumulator)
            for name, lin in _linears(layer).items():
                r = gptq_quantize(lin.weight.data, stats[name].H, bits, group_size, sym=True, act_order=act_order)
                lin.weight.data.copy_(r["deq"].to(lin.weight.dtype))
                results[f"{prefix}.{idx}.{name}"] = r
        else:
            stats = _collect(layer, captured, ActivationStats)
            for prev, names in llama_scale_groups(layer):
                lins = [layer.get_submodule(n) for n in names]
                st = stats[names[0]]
                s, loss, rtn = search_scale(st.tokens(), st.mean_abs(), [lin.weight.data.float() for lin in lins],
                                            bits, group_size)
                fold_scale(prev, lins, s)
                diag["loss"] += loss
                diag["rtn_loss"] += rtn
            for name, lin in _linears(layer).items():
                r = rtn_quantize(lin.weight.data.float(), bits, group_size, sym=False)
                lin.weight.data.copy_(r["deq"].to(lin.weight.dtype))
                results[f"{prefix}.{idx}.{name}"] = r
        captured = _run(layer, captured)  # the quantized layer's outputs feed the next layer
    return results, diag
