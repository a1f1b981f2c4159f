"""The Houlsby bottleneck by hand, its identity start, and what its loader refuses."""

import pytest
import torch

from tunesmith.adapters.bottleneck import Bottleneck, add_bottleneck_adapters, load_bottleneck, save_bottleneck
from tunesmith.config import BottleneckOptions
from tunesmith.errors import UserError


def test_bottleneck_by_hand():
    """h = [1, 2]; down = [[1, 1]], b_down = 0 -> 3; relu -> 3; up = [[2], [-1]], b_up = [0.5, 0]
    -> [6.5, -3]; plus the residual h -> [7.5, -1]."""
    b = Bottleneck(2, 1, "relu")
    with torch.no_grad():
        b.down.weight.copy_(torch.tensor([[1.0, 1.0]]))
        b.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        b.up.bias.copy_(torch.tensor([0.5, 0.0]))
    assert torch.equal(b(torch.tensor([[[1.0, 2.0]]])), torch.tensor([[[7.5, -1.0]]]))


def test_fresh_bottleneck_is_the_identity():
    h = torch.randn(2, 3, 8)
    assert torch.equal(Bottleneck(8, 4, "gelu")(h), h)


def _model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def test_placement_names_and_count(tiny_dir):
    """after: [mlp] on 2 layers of d 64, s 8: 2 x (2*64*8 + 8 + 64) = 2,192 parameters, all under `.mlp.bottleneck`."""
    model = add_bottleneck_adapters(_model(tiny_dir), BottleneckOptions(size=8, after=["mlp"]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".mlp.bottleneck." in n for n in names) and len(names) == 8
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * (2 * 64 * 8 + 8 + 64)
    with pytest.raises(UserError, match="already carries bottleneck adapters"):
        add_bottleneck_adapters(model, BottleneckOptions())


def test_loader_refuses_an_adapter_of_another_shape(tmp_path, tiny_dir):
    model = add_bottleneck_adapters(_model(tiny_dir), BottleneckOptions(size=8, after=["attention"]))
    save_bottleneck(model, tmp_path / "adapter")
    (tmp_path / "adapter" / "bottleneck.json").write_text(
        (tmp_path / "adapter" / "bottleneck.json").read_text().replace('"size": 8', '"size": 4'))
    with pytest.raises(UserError, match=r"adapter_model.safetensors: model.layers.0.self_attn.bottleneck.down.\w+ has shape \(8.*the model expects \(4"):
        load_bottleneck(_model(tiny_dir), tmp_path / "adapter")


def test_modules_to_save_unknown_is_named(tiny_dir):
    with pytest.raises(UserError, match="`adapter.modules_to_save`: 'embeddings' is not a module"):
        add_bottleneck_adapters(_model(tiny_dir), BottleneckOptions(), modules_to_save=["embeddings"])
