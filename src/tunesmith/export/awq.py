"""AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration", Sec. 3.2), written here because AutoAWQ is deprecated and pins an old torch.

Weights that meet large activations matter most. For a group of linears sharing one input X (e.g.
q/k/v after `input_layernorm`), AWQ searches a per-input-channel scale s = s_X^alpha, with s_X the
mean |X| per channel and alpha on a grid in [0, 1], that minimises
    || X W^T - (X / s) Q(W diag(s))^T ||^2          (eq. 4-5)
and folds 1/s into the operation that produces X (the RMSNorm weight, or the rows of the previous
linear), so the full-precision function is unchanged and only the rounding improves. Then every
linear is rounded to nearest with a zero point per group (the AutoAWQ default). alpha = 0 is plain
round-to-nearest, so on the calibration data the search never does worse than RTN.

Simplification, stated: the loss is over the outputs of the group's linears, not over the whole
attention/MLP block as AutoAWQ measures it, and the optional weight-clipping search is not done.
"""

from __future__ import annotations

import torch

from .gptq import rtn_quantize

GRID = 20
MAX_TOKENS = 4096  # tokens kept per input to evaluate the loss (the mean |X| uses all of them)


class ActivationStats:
    """Mean |x| per channel over all tokens, and a sample of tokens to evaluate the AWQ loss on."""

    def __init__(self, in_features: int):
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.n = 0
        self.sample: list[torch.Tensor] = []
        self.kept = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.abs_sum += x.abs().sum(0).double()
        self.n += x.shape[0]
        if self.kept < MAX_TOKENS:
            self.sample.append(x[: MAX_TOKENS - self.kept])
            self.kept += self.sample[-1].shape[0]

    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(1, self.n)).float()

    def tokens(self) -> torch.Tensor:
        return torch.cat(self.sample)


@torch.no_grad()
def search_scale(x: torch.Tensor, x_mean_abs: torch.Tensor, weights: list[torch.Tensor], bits: int,
                 group_size: int) -> tuple[torch.Tensor, float, float]:
    """(best s, its loss, the loss of plain RTN) for linears `weights` that share input tokens `x`."""
    want = [x @ w.t() for w in weights]
    best = (None, float("inf"))
    rtn_loss = float("nan")
    for k in range(GRID + 1):
        alpha = k / GRID
        s = x_mean_abs.clamp_min(1e-4).pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        loss = 0.0
        for w, y in zip(weights, want):
            wq = rtn_quantize(w * s[None, :], bits, group_size, sym=False)["deq"] / s[None, :]
            loss += (x @ wq.t() - y).pow(2).sum().item()
        if k == 0:
            rtn_loss = loss
        if loss < best[1]:
            best = (s, loss)
    return best[0], best[1], rtn_loss


def fold_scale(prev: torch.nn.Module, linears: list[torch.nn.Module], s: torch.Tensor) -> None:
    """prev's output / s, the linears' input columns * s: the composed function does not change."""
    with torch.no_grad():
        if isinstance(prev, torch.nn.Linear):
            prev.weight.div_(s[:, None].to(prev.weight.dtype))
            if prev.bias is not None:
                prev.bias.div_(s.to(prev.bias.dtype))
        else:  # RMSNorm / LayerNorm: an elementwise weight (and maybe bias) on the output
            prev.weight.div_(s.to(prev.weight.dtype))
            if getattr(prev, "bias", None) is not None:
                prev.bias.div_(s.to(prev.bias.dtype))
        for lin in linears:
            lin.weight.mul_(s[None, :].to(lin.weight.dtype))


def llama_scale_groups(layer) -> list[tuple[torch.nn.Module, list[str]]]:
    """(op producing the input, names of the linears reading it) for a Llama-family decoder layer."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = [(layer.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])]
    if attn.v_proj.weight.shape[0] == attn.o_proj.weight.shape[1]:  # with GQA v's rows do not map onto o's columns
        groups.append((attn.v_proj, ["self_attn.o_proj"]))
    groups.append((layer.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"]))
    groups.append((mlp.up_proj, ["mlp.down_proj"]))
    return groups
