"""Chunked lm_head + cross-entropy against the full-logits reference."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tunesmith.train.losses import IGNORE_INDEX, cross_entropy_sum, fused_linear_cross_entropy

N, H, V = 37, 16, 53


def _inputs(dtype=torch.float64, bias=True, ignored=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g, dtype=dtype) / math.sqrt(H)).requires_grad_()
    b = (torch.randn(V, generator=g, dtype=dtype)).requires_grad_() if bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.rand(N, generator=g) < ignored] = IGNORE_INDEX
    return hidden, weight, b, targets


def _reference(hidden, weight, bias, targets, softcap=None, logit_scale=1.0):
    logits = F.linear(hidden, weight, bias) * logit_scale  # (N, V)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def _loss_and_grads(fn, hidden, weight, bias, targets, grad_scale=1.0, **kw):
    params = [p for p in (hidden, weight, bias) if p is not None and p.requires_grad]
    loss = fn(hidden, weight, targets, **kw) if bias is None else fn(hidden, weight, targets, bias=bias, **kw)
    grads = torch.autograd.grad(loss * grad_scale, params)
    return loss.detach(), grads


def _fused(hidden, weight, targets, **kw):
    return fused_linear_cross_entropy(hidden, weight, targets, **kw)


def _ref(hidden, weight, targets, bias=None, chunk_size=None, **kw):
    return _reference(hidden, weight, bias, targets, **kw)


class _LargestTensor(TorchDispatchMode):
    """Records the largest storage (in elements) and every shape that any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
                self.shapes.add(tuple(t.shape))
        return out


def test_hand_computed_uniform_logits():
    """hidden = 0 gives logits = 0, so each labeled row costs ln V = ln 4 and 2 labeled rows sum to
    2 ln 4; d loss / d hidden_i = (softmax - onehot(t_i)) @ W = (1/4 - onehot) @ W, and 0 for the
    ignored row."""
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], requires_grad=True)
    hidden = torch.zeros(3, 2, requires_grad=True)
    targets = torch.tensor([0, IGNORE_INDEX, 2])
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=1)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(2 * math.log(4), rel=1e-6)
    mean_row = weight.detach().mean(0)  # (1/4) * sum of W's rows = [0.5, 0.5]
    expected = torch.stack([mean_row - weight[0], torch.zeros(2), mean_row - weight[2]]).detach()
    torch.testing.assert_close(hidden.grad, expected)
    torch.testing.assert_close(weight.grad, torch.zeros(4, 2))  # hidden = 0, so grad_W = g^T @ 0


@pytest.mark.parametrize("chunk_size", [1, 7, N, N + 5])
@pytest.mark.parametrize(
    "dtype,softcap,logit_scale",
    [(torch.float64, None, 1.0), (torch.float64, 2.0, 0.7), (torch.float32, None, 1.0), (torch.float32, 3.0, 1.3)],
)
def test_matches_full_logits_reference(chunk_size, dtype, softcap, logit_scale):
    """loss = sum_{i labeled} [lse(z_i) - z_i[t_i]], z = cap(scale * (h W^T + b)), cap(x) = c tanh(x / c);
    loss and d(0.37 * loss)/d{h, W, b} equal F.cross_entropy(z, t, reduction="sum") on the full
    (N, V) logits to 1e-5 relative, for chunks of 1, 7, N and > N rows with ~30% ignored rows."""
    hidden, weight, bias, targets = _inputs(dtype)
    assert (targets == IGNORE_INDEX).any() and (targets != IGNORE_INDEX).any()
    kw = dict(softcap=softcap, logit_scale=logit_scale, chunk_size=chunk_size)
    loss, grads = _loss_and_grads(_fused, hidden, weight, bias, targets, grad_scale=0.37, **kw)
    ref_loss, ref_grads = _loss_and_grads(_ref, hidden, weight, bias, targets, grad_scale=0.37, **kw)
    atol = 1e-10 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(loss.to(dtype), ref_loss, rtol=1e-5, atol=atol)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=atol)


def test_gradcheck_float64():
    """Finite differences of the fused loss in fp64 agree with its analytic grads w.r.t. h, W, b
    (softcap and scale on, chunk of 4 rows so several chunks and an ignored row are crossed)."""
    g = torch.Generator().manual_seed(2)
    hidden, weight, bias = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in [(9, 5), (11, 5), (11,)])
    targets = torch.randint(0, 11, (9,), generator=g)
    targets[[2, 5]] = IGNORE_INDEX
    fn = lambda h, w, b: fused_linear_cross_entropy(h, w, targets, bias=b, chunk_size=4, softcap=2.0, logit_scale=0.8)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden, weight, bias))


def test_frozen_weight_gets_no_gradient():
    """With W.requires_grad = False the (V, H) grad_W = g^T @ h is never formed (no op returns a
    (V, H) tensor) and W.grad stays None, while d loss / d h still equals the reference."""
    hidden, weight, _, targets = _inputs(torch.float32, bias=False)
    weight.requires_grad_(False)
    with _LargestTensor() as seen:
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=8)
        loss.backward()
    assert (V, H) not in seen.shapes
    assert weight.grad is None
    ref_hidden = hidden.detach().clone().requires_grad_()
    _reference(ref_hidden, weight, None, targets).backward()
    torch.testing.assert_close(hidden.grad, ref_hidden.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [N, 0])
def test_no_labeled_rows_gives_zero_loss_and_zero_grads(rows):
    """All targets IGNORE_INDEX (or N = 0): the sum over an empty set is 0.0, and it still backprops,
    giving all-zero grads for h, W and b."""
    hidden, weight, bias, _ = _inputs(torch.float32)
    hidden = hidden.detach()[:rows].requires_grad_()
    targets = torch.full((rows,), IGNORE_INDEX)
    loss = fused_linear_cross_entropy(hidden, weight, targets, bias=bias, chunk_size=5)
    loss.backward()
    assert loss.item() == 0.0
    assert hidden.grad.shape == (rows, H) and not hidden.grad.any()
    assert not weight.grad.any() and not bias.grad.any()


@pytest.mark.parametrize("bad", [V, -1, 10**6])
def test_out_of_range_target_is_rejected(bad):
    """A target outside [0, V) that is not IGNORE_INDEX (-100) is a data/tokenizer mismatch: the
    error names the bad value and the vocabulary size."""
    hidden, weight, _, targets = _inputs(torch.float32)
    targets[3] = bad
    with pytest.raises(ValueError, match=rf"target {bad} is outside the vocabulary \[0, {V}\)"):
        fused_linear_cross_entropy(hidden, weight, targets)


def test_non_contiguous_inputs():
    """h a strided column slice, W the transpose of an (H, V) tensor, targets every other element
    of a longer vector: same loss and grads as the reference on the same (strided) tensors."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(N, 2 * H, generator=g, requires_grad=True)
    weight_t = (torch.randn(H, V, generator=g) / math.sqrt(H)).requires_grad_()
    targets = torch.randint(0, V, (2 * N,), generator=g)[::2]
    targets[::4] = IGNORE_INDEX
    h, w = hidden[:, ::2], weight_t.T
    assert not h.is_contiguous() and not w.is_contiguous() and not targets.is_contiguous()
    loss = fused_linear_cross_entropy(h, w, targets, chunk_size=6)
    grads = torch.autograd.grad(loss, (hidden, weight_t))
    ref_loss = _reference(h, w, None, targets)
    ref_grads = torch.autograd.grad(ref_loss, (hidden, weight_t))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _bf16_close(got, want):
    # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%); logits are rounded once after the
    # matmul and the grads once more, so allow a few steps relative to the tensor's scale.
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=3e-2 * want.abs().max().item())


def test_bf16_matches_fp32_reference():
    """bf16 h, W, b: loss within 1% and grads within 3% of max|grad| of the fp32 reference computed
    on the same bf16 values upcast; the loss comes back in fp32 and the grads in bf16."""
    hidden, weight, bias, targets = _inputs(torch.bfloat16)
    loss, grads = _loss_and_grads(_fused, hidden, weight, bias, targets, chunk_size=8)
    fp32 = [t.detach().float().requires_grad_() for t in (hidden, weight, bias)]
    ref_loss, ref_grads = _loss_and_grads(_ref, *fp32, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-2)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == torch.bfloat16
        _bf16_close(got, want)


def test_autocast_bf16_runs_matmuls_in_bf16_and_returns_fp32_grads():
    """Under torch.autocast("cpu", bf16) with fp32 h, W: the lm_head matmul runs in bf16 (as
    autocast's linear would), the loss is fp32 and close to the fp32 reference, and the grads reach
    the fp32 leaves as fp32."""
    hidden, weight, _, targets = _inputs(torch.float32, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = _loss_and_grads(_fused, hidden, weight, None, targets, chunk_size=8)
    ref_loss, ref_grads = _loss_and_grads(_ref, hidden, weight, None, targets)
    assert loss.dtype == torch.float32
    assert loss.item() != pytest.approx(ref_loss.item(), rel=1e-6)  # bf16 rounding really happened
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-2)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == torch.float32
        _bf16_close(got, want)


def test_no_grad_computes_only_the_loss():
    """Under torch.no_grad nothing needs a gradient, so no (N, H) or (V, H) grad buffer is made and
    the value is still the reference sum."""
    hidden, weight, _, targets = _inputs(torch.float32, bias=False)
    with torch.no_grad(), _LargestTensor() as seen:
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=8)
    assert (N, H) not in seen.shapes and (V, H) not in seen.shapes
    torch.testing.assert_close(loss, _reference(hidden, weight, None, targets).detach())


def test_largest_tensor_is_one_chunk_not_the_full_logits():
    """V = 32000, N = 1024, H = 64, chunk 128: over forward + backward the fused path never creates a
    tensor of more than chunk * V = N * V / 8 elements, while the reference creates the N * V logits.
    (N = 4096 shows the same ratio but takes ~10 s on two cores; bench/fused_ce.py runs the big case.)"""
    n, h, v, chunk = 1024, 64, 32000, 128
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = (torch.randn(v, h, generator=g) / 8).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    with _LargestTensor() as fused:
        fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk).backward()
    assert fused.largest <= chunk * v < n * v // 4
    with _LargestTensor() as plain:
        _reference(hidden, weight, None, targets).backward()
    assert plain.largest >= n * v


def test_chunks_are_capped_by_the_logits_budget(monkeypatch):
    """The chunk is min(chunk_size, CHUNK_ELEMENTS // V) rows: with the budget set to 3 * V = 159
    elements and chunk_size 1000, no tensor exceeds 3 x 53 logits, and the loss and gradients
    still equal the plain reference (so a 128k vocabulary gets small chunks automatically)."""
    import tunesmith.train.losses as losses

    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 3 * V)
    hidden, weight, bias, targets = _inputs(torch.float64)
    with _LargestTensor() as seen:
        got = _loss_and_grads(_fused, hidden, weight, bias, targets, chunk_size=1000)
    chunk_rows = {s[0] for s in seen.shapes if len(s) == 2 and s[1] == V and s != (H, V)}  # (H, V) is weight.T
    assert max(chunk_rows) == 3
    want = _loss_and_grads(_ref, hidden, weight, bias, targets)
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b)


def test_cross_entropy_sum_upcasts_bf16_logits():
    """cross_entropy_sum on bf16 (B, T, V) logits is fp32 and equals sum_{labeled} lse(z) - z[t]
    computed in fp64 from the same bf16 values; e.g. row [0, 1] with target 0 costs ln(1 + e)."""
    logits = torch.tensor([[[0.0, 1.0], [2.0, -1.0]], [[0.5, 0.5], [3.0, 0.0]]], dtype=torch.bfloat16)
    targets = torch.tensor([[0, IGNORE_INDEX], [1, 0]])
    got = cross_entropy_sum(logits, targets)
    want = math.log(1 + math.e) + math.log(2) + math.log(1 + math.exp(-3))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-6)
    big = torch.randn(2, 5, 300, dtype=torch.bfloat16)
    t = torch.randint(0, 300, (2, 5))
    t[0, :2] = IGNORE_INDEX
    z, tt = big.double().reshape(10, 300), t.reshape(10)
    keep = tt != IGNORE_INDEX
    want = (torch.logsumexp(z[keep], -1) - z[keep].gather(1, tt[keep, None]).squeeze(1)).sum()
    assert cross_entropy_sum(big, t).item() == pytest.approx(want.item(), rel=1e-6)
