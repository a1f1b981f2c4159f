"""Quantization math: NF4 codebook and blocks (PITFALLS 16), GPTQ/AWQ packed layouts by hand,
GPTQ's error feedback, AWQ's scale search and folding."""

import pytest
import torch

from tunesmith.export.awq import fold_scale, search_scale
from tunesmith.export.gptq import HessianAccumulator, gptq_quantize, rtn_quantize
from tunesmith.export.quantize_pack import grid_params, pack_awq, pack_gptq, unpack_awq, unpack_gptq


def test_nf4_codebook_and_blocks():
    """PITFALLS 16: 16 NF4 codes from -1.0, -0.6961928 ... 0.7229568, 1.0 (bitsandbytes functional.py);
    one absmax per block of 64; double quantization stores the absmaxes - their mean as 8-bit codes in
    blocks of 256. A block whose values are absmax x code reconstructs exactly."""
    import bitsandbytes.functional as F

    code = F.get_4bit_type("nf4", device="cpu")
    assert code.numel() == 16
    torch.testing.assert_close(code[:2], torch.tensor([-1.0, -0.6961928]), atol=1e-7, rtol=0)
    torch.testing.assert_close(code[-2:], torch.tensor([0.7229568, 1.0]), atol=1e-7, rtol=0)
    assert code[7].item() == 0.0

    w = torch.randn(64 * 512)
    packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    assert state.blocksize == 64 and state.absmax.numel() == 512 and packed.numel() == w.numel() // 2
    _, dq = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    assert dq.absmax.dtype == torch.uint8 and dq.state2.blocksize == 256 and dq.state2.absmax.numel() == 2
    torch.testing.assert_close(dq.offset, state.absmax.mean(), atol=1e-6, rtol=0)

    exact = torch.cat([code * 3.0] * 4)  # one block of 64: absmax 3, every value on the grid
    p, s = F.quantize_4bit(exact, blocksize=64, compress_statistics=False, quant_type="nf4")
    torch.testing.assert_close(F.dequantize_4bit(p, s).flatten(), exact, atol=1e-6, rtol=0)


def test_gptq_v1_layout_by_hand():
    """One output column, input rows with values 1..8 -> one int32 0x87654321 (row 0 in the low bits)
    = 2271560481 - 2**32 = -2023406815. Symmetric 4-bit zero point 8 is stored as 7 in every nibble:
    0x77777777 = 2004318071."""
    q = torch.arange(1, 9).repeat(8, 1)  # (out 8, in 8): every output row is 1..8
    zero = torch.full((8, 1), 8.0)
    scale = torch.full((8, 1), 0.5)
    t = pack_gptq(q, zero, scale, torch.zeros(8, dtype=torch.int64), bits=4)
    assert t["qweight"].shape == (1, 8) and t["qweight"].dtype == torch.int32
    assert t["qweight"][0, 0].item() == 0x87654321 - 2**32
    assert t["qzeros"].shape == (1, 1) and t["qzeros"][0, 0].item() == 0x77777777
    assert t["scales"].dtype == torch.float16 and t["g_idx"].dtype == torch.int32
    torch.testing.assert_close(unpack_gptq(t, 4), 0.5 * (q.float() - 8))


def test_awq_gemm_layout_by_hand():
    """AWQ packs 8 output columns per int32 in the order [0,2,4,6,1,3,5,7]: columns with values
    0..7 give nibbles 0,2,4,6,1,3,5,7 from the low end = 0x75316420 = 1966171168."""
    q = torch.arange(8)[:, None].repeat(1, 8)  # (out 8, in 8): output row j holds value j
    t = pack_awq(q, torch.zeros(8, 1), torch.ones(8, 1))
    assert t["qweight"].shape == (8, 1) and t["qweight"][0, 0].item() == 0x75316420
    torch.testing.assert_close(unpack_awq(t, 8), q.float())


def test_pack_roundtrip_random():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    r = rtn_quantize(w, bits=4, group_size=16, sym=False)
    torch.testing.assert_close(unpack_awq(pack_awq(r["q"], r["zero"], r["scale"]), 16), r["deq"], atol=0, rtol=0)
    r = rtn_quantize(w, bits=8, group_size=32, sym=True)
    t = pack_gptq(r["q"], r["zero"], r["scale"], r["g_idx"], bits=8)
    torch.testing.assert_close(unpack_gptq(t, 8), r["deq"], atol=0, rtol=0)


def test_grid_params_by_hand():
    """Row [-1, 0, 2], 2 bits (levels 0..3): asym scale (2 - -1)/3 = 1, zero round(1/1) = 1;
    sym: max |x| = 2, scale 4/3 (in fp16: 1.3330078), zero 2."""
    s, z = grid_params(torch.tensor([[-1.0, 0.0, 2.0]]), bits=2, sym=False)
    assert (s.item(), z.item()) == (1.0, 1.0)
    s, z = grid_params(torch.tensor([[-1.0, 0.0, 2.0]]), bits=2, sym=True)
    assert s.item() == pytest.approx(1.3330078125) and z.item() == 2.0


def _correlated_inputs(n=2048, d=64, seed=0):
    """Low-rank (8 factors) plus noise: strongly correlated channels, as LLM activations are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) @ torch.randn(8, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)


def test_gptq_beats_rtn_and_is_rtn_when_inputs_are_uncorrelated():
    """With H diagonal the error feedback (off-diagonal of chol(H^-1)) is zero, so GPTQ = RTN exactly.
    With correlated inputs GPTQ's output error ||X W^T - X Q^T|| is clearly below RTN's."""
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    r = rtn_quantize(w, bits=4, group_size=16, sym=True)
    g = gptq_quantize(w, torch.diag(torch.linspace(1, 2, 64)), bits=4, group_size=16, sym=True)
    assert torch.equal(g["q"], r["q"])

    x = _correlated_inputs()
    acc = HessianAccumulator(64)
    for chunk in x.split(500):  # the running mean over chunks equals 2 X^T X / n
        acc.add(chunk)
    torch.testing.assert_close(acc.H, 2 * x.double().t() @ x.double() / len(x))
    err = {name: (x @ (w - res["deq"]).t()).norm().item() for name, res in [
        ("rtn", r), ("gptq", gptq_quantize(w, acc.H, 4, 16)), ("gptq_act", gptq_quantize(w, acc.H, 4, 16, act_order=True))]}
    assert err["gptq"] < 0.5 * err["rtn"] and err["gptq_act"] < 0.5 * err["rtn"], err


def test_gptq_act_order_g_idx_maps_columns_to_their_groups():
    x = _correlated_inputs()
    w = torch.randn(16, 64)
    g = gptq_quantize(w, 2 * x.double().t() @ x.double() / len(x), 4, 16, act_order=True)
    assert sorted(torch.bincount(g["g_idx"]).tolist()) == [16, 16, 16, 16]
    assert not torch.equal(g["g_idx"], torch.arange(64) // 16)  # desc_act: groups follow the permutation
    torch.testing.assert_close(unpack_gptq(pack_gptq(g["q"], g["zero"], g["scale"], g["g_idx"], 4), 4), g["deq"],
                               atol=0, rtol=0)


def test_awq_search_no_worse_than_rtn_and_fold_keeps_function():
    """alpha = 0 is RTN, so the searched loss is <= RTN's; with a few large-activation channels it is
    strictly lower. Folding 1/s into an RMSNorm weight and s into the linear leaves outputs unchanged."""
    torch.manual_seed(0)
    x = torch.randn(1024, 64)
    x[:, :4] *= 30  # outlier channels, as in real LLM activations
    w = torch.randn(48, 64)
    s, loss, rtn = search_scale(x, x.abs().mean(0), [w], bits=4, group_size=16)
    assert loss < 0.9 * rtn

    norm = torch.nn.RMSNorm(64)
    lin = torch.nn.Linear(64, 48, bias=False)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    h = torch.randn(8, 64)
    before = lin(norm(h))
    fold_scale(norm, [lin], s)
    torch.testing.assert_close(lin(norm(h)), before, atol=1e-5, rtol=1e-5)
