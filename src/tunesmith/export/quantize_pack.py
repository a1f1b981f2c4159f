"""Integer quantization grids and the packed tensor layouts that existing GPTQ/AWQ readers load.

Layouts (read from AutoGPTQ's `qlinear` and AutoAWQ's `WQLinear_GEMM.from_linear`; gptqmodel,
optimum, vLLM and transformers read the same):

* GPTQ (`checkpoint_format: gptq`, "v1"): `qweight` int32 (in/(32/b), out), input rows packed
  low bits first; `qzeros` int32 (groups, out/(32/b)) holding zero-1 (the v1 offset); `scales`
  fp16 (groups, out); `g_idx` int32 (in,) = group of each input column (not monotonic with act-order).
* AWQ GEMM (4-bit): `qweight` int32 (in, out/8) with the 8 output columns of each int in the
  order [0, 2, 4, 6, 1, 3, 5, 7]; `qzeros` int32 (groups, out/8) the same, no offset; `scales`
  fp16 (groups, out).

Scales are rounded to fp16 *before* the integers are chosen, so dequantizing what is on disk gives
exactly the weights the quantizer evaluated.
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def grid_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) per row of `w` (rows, cols) for a min-max grid of 2**bits levels that contains 0."""
    maxq = 2**bits - 1
    xmin = w.min(1).values.clamp(max=0)
    xmax = w.max(1).values.clamp(min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    flat = (xmax - xmin) == 0
    xmin, xmax = torch.where(flat, -torch.ones_like(xmin), xmin), torch.where(flat, torch.ones_like(xmax), xmax)
    scale = ((xmax - xmin) / maxq).half().float()  # fp16 on disk: decide the integers with that scale
    zero = torch.full_like(scale, (maxq + 1) // 2) if sym else torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero


def quantize_int(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in [0, 2**bits - 1]; w (rows, cols), scale/zero (rows,) or (rows, cols)."""
    if scale.dim() == 1:
        scale, zero = scale[:, None], zero[:, None]
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def dequantize_int(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    if scale.dim() == 1:
        scale, zero = scale[:, None], zero[:, None]
    return scale * (q - zero)


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    x = x & 0xFFFFFFFF
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def _pack_rows(v: torch.Tensor, bits: int) -> torch.Tensor:
    """(R, C) small ints -> (R/(32/b), C) int32, row r*(32/b)+j in bits [b*j, b*j+b)."""
    per = 32 // bits
    v = v.to(torch.int64).reshape(-1, per, v.shape[1])
    shifts = (torch.arange(per, dtype=torch.int64) * bits)[None, :, None]
    return _to_int32((v << shifts).sum(1))


def _unpack_rows(p: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    p = p.to(torch.int64) & 0xFFFFFFFF
    shifts = (torch.arange(per, dtype=torch.int64) * bits)[None, :, None]
    return ((p[:, None, :] >> shifts) & (2**bits - 1)).reshape(-1, p.shape[1])


def _check_divisible(n: int, bits: int, what: str) -> None:
    if n % (32 // bits):
        raise ValueError(f"{what} {n} is not a multiple of {32 // bits}; cannot pack {bits}-bit values into int32")


def pack_gptq(q: torch.Tensor, zero: torch.Tensor, scale: torch.Tensor, g_idx: torch.Tensor, bits: int) -> dict:
    """q (out, in) ints; zero/scale (out, groups); g_idx (in,) -> the GPTQ v1 tensors."""
    _check_divisible(q.shape[1], bits, "in_features")
    _check_divisible(q.shape[0], bits, "out_features")
    if bool((zero < 1).any()):
        raise ValueError("GPTQ v1 stores zero - 1; a zero point of 0 would wrap (use sym=True, zero = 2**(b-1))")
    return {
        "qweight": _pack_rows(q.t().contiguous(), bits),
        "qzeros": _pack_rows(zero.to(torch.int64) - 1, bits).t().contiguous(),  # v1 stores zero - 1
        "scales": scale.t().contiguous().half(),
        "g_idx": g_idx.to(torch.int32),
    }


def unpack_gptq(t: dict, bits: int) -> torch.Tensor:
    """The fp32 weight (out, in) a GPTQ v1 reader computes: scale[g] * (q - (qzero + 1))."""
    q = _unpack_rows(t["qweight"], bits).float()  # (in, out)
    zero = (_unpack_rows(t["qzeros"].t().contiguous(), bits).t() + 1).float()  # (groups, out)
    g = t["g_idx"].long()
    return (t["scales"].float()[g] * (q - zero[g])).t().contiguous()


def pack_awq(q: torch.Tensor, zero: torch.Tensor, scale: torch.Tensor) -> dict:
    """q (out, in) 4-bit ints; zero/scale (out, groups) -> AutoAWQ GEMM tensors."""
    _check_divisible(q.shape[0], 4, "out_features")

    def pack_cols(v: torch.Tensor) -> torch.Tensor:  # (R, out) -> (R, out/8) int32, AWQ column order
        v = v.to(torch.int64).reshape(v.shape[0], -1, 8)[:, :, list(AWQ_ORDER)]
        return _to_int32((v << (torch.arange(8, dtype=torch.int64) * 4)).sum(-1))

    return {"qweight": pack_cols(q.t()), "qzeros": pack_cols(zero.t()), "scales": scale.t().contiguous().half()}


def unpack_awq(t: dict, group_size: int) -> torch.Tensor:
    def unpack_cols(p: torch.Tensor) -> torch.Tensor:  # (R, out/8) -> (R, out)
        p = p.to(torch.int64) & 0xFFFFFFFF
        v = (p[:, :, None] >> (torch.arange(8, dtype=torch.int64) * 4)) & 15  # (R, out/8, 8) in AWQ order
        out = torch.empty_like(v)
        out[:, :, list(AWQ_ORDER)] = v
        return out.reshape(p.shape[0], -1)

    q, zero = unpack_cols(t["qweight"]).float(), unpack_cols(t["qzeros"]).float()  # (in, out), (groups, out)
    group_size = q.shape[0] if group_size == -1 else group_size
    g = torch.arange(q.shape[0]) // group_size
    return (t["scales"].float()[g] * (q - zero[g])).t().contiguous()
