"""LoraLinear (train/lora_linear.py) computes what PEFT's lora.Linear computes, and steps aside when it cannot."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from tunesmith.train.lora_linear import LoraLinear, fuse_lora_linears


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(12, 12, bias=False)
        self.up = nn.Linear(12, 20, bias=True)
        self.down = nn.Linear(20, 12, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(self.q(x))))


def _pair(dropout: float = 0.0, dtype=torch.float64, **lora):
    torch.manual_seed(0)
    base = Net().to(dtype)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q", "up", "down"], **lora)
    plain = get_peft_model(base, cfg)
    for name, p in plain.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; a nonzero B exercises every gradient path
            nn.init.normal_(p, std=0.5)
    fused = copy.deepcopy(plain)
    return plain, fused, fuse_lora_linears(fused)


def _run(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


def _grad_fns(out: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def test_values_and_gradients_match_peft():
    plain, fused, n = _pair()
    assert n == 3
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    out_p, gx_p, g_p = _run(plain, x)
    out_f, gx_f, g_f = _run(fused, x)
    torch.testing.assert_close(out_f, out_p)
    torch.testing.assert_close(gx_f, gx_p)
    assert g_f.keys() == g_p.keys() and len(g_p) == 6
    for name in g_p:
        torch.testing.assert_close(g_f[name], g_p[name], msg=name)
    assert "LoraLinearBackward" in _grad_fns(fused(x))


def test_fp32_matches_within_rounding():
    plain, fused, _ = _pair(dtype=torch.float32)
    x = torch.randn(2, 7, 12)
    out_p, gx_p, g_p = _run(plain, x)
    out_f, gx_f, g_f = _run(fused, x)
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_f, gx_p, rtol=1e-5, atol=1e-5)
    for name in g_p:
        torch.testing.assert_close(g_f[name], g_p[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", ["dropout", "disabled", "autocast", "trainable_base", "lora_bias"])
def test_falls_back_to_peft(case):
    dtype = torch.float32 if case == "autocast" else torch.float64
    plain, fused, _ = _pair(dropout=0.1 if case == "dropout" else 0.0, dtype=dtype,
                            **({"lora_bias": True} if case == "lora_bias" else {}))
    if case == "trainable_base":
        for name in ("q", "up", "down"):  # full fine-tuning of the base beside LoRA: PEFT's path computes its gradient
            getattr(fused.base_model.model, name).base_layer.weight.requires_grad_(True)
    x = torch.randn(2, 3, 12, dtype=dtype, requires_grad=True)
    if case == "disabled":
        with fused.disable_adapter():
            out = fused(x)
        with plain.disable_adapter():
            torch.testing.assert_close(out, plain(x))
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(x)
    else:
        out = fused(x)
    assert "LoraLinearBackward" not in _grad_fns(out)


def test_direct_function_matches_formula():
    torch.manual_seed(1)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    a = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    bb = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, bb: LoraLinear.apply(x, w, b, a, bb, 1.5), (x, a, bb))


def test_packed_row_equals_examples_one_by_one_with_fused_lora(tiny_dir):
    """The packing guarantee (tests/unit/test_packing.py) holds on the fused path: a LoRA model's packed
    row gives the loss and LoRA gradients of its examples run alone."""
    from transformers import AutoModelForCausalLM

    from tunesmith.data.packing import collate, pack, unpacked
    from tunesmith.train.forward import CausalLMLoss
    from test_packing import _examples

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.05)
    assert fuse_lora_linears(model) > 0
    lm, exs = CausalLMLoss(model, chunk_size=16), _examples(5)
    packed = collate(pack(exs, max_length=256), pad_id=0)
    loss_packed = lm(**packed)
    assert "LoraLinearBackward" in _grad_fns(loss_packed)
    loss_packed.backward()
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    g_packed = {n: p.grad.clone() for n, p in lora.items()}
    model.zero_grad()
    loss_alone = sum(lm(**collate(unpacked([e]), pad_id=0)) for e in exs)
    loss_alone.backward()
    torch.testing.assert_close(loss_packed, loss_alone, rtol=1e-5, atol=1e-5)
    for n, p in lora.items():
        torch.testing.assert_close(g_packed[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_no_grad_path_is_bitwise_the_autograd_forward():
    """Without gradient recording (generation, reference passes) the fused layers skip the autograd
    Function but compute the very same ops: equal bits, and no graph."""
    _, fused, _ = _pair(dtype=torch.float32)
    x = torch.randn(4, 3, 12)
    with_grad = fused(x)
    with torch.no_grad():
        without = fused(x)
    assert torch.equal(without, with_grad.detach()) and without.grad_fn is None
    calls = []
    orig = LoraLinear.apply
    LoraLinear.apply = lambda *a: calls.append(1) or orig(*a)
    try:
        with torch.inference_mode():
            assert torch.equal(fused(x), with_grad.detach())
        assert calls == []  # the direct path ran
        fused(x)
        assert len(calls) == 3
    finally:
        LoraLinear.apply = orig
