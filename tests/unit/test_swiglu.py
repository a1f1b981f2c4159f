"""SiluMul (train/swiglu.py): the same gradients as the unfused MLP, one saved tensor less per layer."""

import torch

from tunesmith.train.swiglu import SiluMul, fuse_swiglu


def test_silumul_gradients_are_bitwise_autograd_s():
    g = torch.Generator().manual_seed(0)
    gate = torch.randn(3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    (torch.nn.functional.silu(gate) * up * w).sum().backward()
    want = gate.grad.clone(), up.grad.clone()
    gate.grad = up.grad = None
    (SiluMul.apply(gate, up) * w).sum().backward()
    assert torch.equal(gate.grad, want[0]) and torch.equal(up.grad, want[1])
    assert torch.autograd.gradcheck(SiluMul.apply, (gate.detach().requires_grad_(), up.detach().requires_grad_()))


def _saved_wide(model, ids, width):
    seen = set()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack_hook(t):
        if t.dim() > 0 and t.shape[-1] == width and t.untyped_storage().data_ptr() not in params:
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    return loss, len(seen)


def test_fused_model_same_loss_and_grads_fewer_saved_tensors(tiny_dir):
    from transformers import AutoModelForCausalLM

    ids = torch.randint(5, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).train()
    width, layers = model.config.intermediate_size, model.config.num_hidden_layers
    loss, n_before = _saved_wide(model, ids, width)
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    assert fuse_swiglu(model) == layers
    loss2, n_after = _saved_wide(model, ids, width)
    loss2.backward()
    assert torch.equal(loss, loss2)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, want[n]), n
    # gate out, silu out, up out, product (down's input) -> the same without silu out
    assert (n_before, n_after) == (4 * layers, 3 * layers)
