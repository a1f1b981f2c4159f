"""The 4-bit CPU path: bitsandbytes' packed AVX512-BF16 inference kernel crashes on narrow layers
(N % 32, K % blocksize) and multiplies in bf16; `use_portable_cpu_kernel` keeps every machine on the
training path (dequantize, multiply in the compute dtype)."""

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from tunesmith.models.bnb_cpu import use_portable_cpu_kernel  # noqa: E402


def _layer(n_in: int, n_out: int):
    layer = bnb.nn.Linear4bit(n_in, n_out, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(n_out, n_in), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")  # quantizes
    layer.support_avx512bf16_for_cpu = True  # as on a CPU with AVX512-BF16, whatever this machine has
    return layer.eval()


def test_every_4bit_layer_is_switched_to_the_portable_kernel():
    layers = [_layer(64, 16), _layer(176, 64), _layer(64, 64)]
    model = torch.nn.Sequential(*layers)
    assert use_portable_cpu_kernel(model) == 3
    assert not any(layer.support_avx512bf16_for_cpu for layer in layers)
    assert use_portable_cpu_kernel(model) == 0


@pytest.mark.parametrize("n_in, n_out", [(64, 16), (176, 64), (128, 64)])
def test_inference_equals_the_fp32_product_of_the_dequantized_weight(n_in, n_out):
    """(64, 16) and (176, 64) crash on the packed path; (128, 64) would run it in bf16."""
    layer = _layer(n_in, n_out)
    use_portable_cpu_kernel(layer)
    x = torch.randn(3, n_in)
    with torch.no_grad():
        y = layer(x)
    w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(y, x @ w.t(), rtol=1e-5, atol=1e-5)
