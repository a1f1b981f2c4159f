"""Whole-model merging from a merge.yaml: the saved tensors are the formula applied to the inputs,
`from_pretrained` loads the result, and bad configs fail with the key and the fix."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.errors import ConfigError, UserError
from tunesmith.merge.models import merge_models


@pytest.fixture(scope="module")
def family(tiny_dir, tmp_path_factory):
    """The tiny base and two 'fine-tunes' of it (base + different noise), saved as model dirs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("family")
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    for i in (1, 2):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
        torch.manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        model.save_pretrained(root / f"ft{i}", safe_serialization=True)
        tok.save_pretrained(root / f"ft{i}")
    return tiny_dir, root / "ft1", root / "ft2"


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _w(path):
    return load_file(f"{path}/model.safetensors")


def test_linear_with_per_tensor_weights(family, tmp_path):
    """mlp tensors: (0.8 a + 0.2 b) / 1.0; all others: (0.3 a + 0.3 b) / 0.6 = mean."""
    base, a, b = family
    cfg = {"method": "linear", "models": [
        {"path": str(a), "weight": [{"match": "*.mlp.*", "value": 0.8}, {"value": 0.3}]},
        {"path": str(b), "weight": [{"match": "*.mlp.*", "value": 0.2}, {"value": 0.3}]}]}
    summary = merge_models(_write(tmp_path, cfg), tmp_path / "out")
    got, wa, wb = _w(tmp_path / "out"), _w(a), _w(b)
    name = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(got[name], 0.8 * wa[name] + 0.2 * wb[name])
    name = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(got[name], (wa[name] + wb[name]) / 2)
    assert summary["tensors"] == len(wa) and (tmp_path / "out" / "tokenizer.json").is_file()
    assert (tmp_path / "out" / "report.md").is_file()


def test_ties_and_task_arithmetic_against_formula(family, tmp_path):
    base, a, b = family
    wbase, wa, wb = _w(base), _w(a), _w(b)
    name = "model.layers.0.mlp.down_proj.weight"
    cfg = {"method": "task_arithmetic", "base_model": str(base), "parameters": {"scale": 0.5},
           "models": [{"path": str(a)}, {"path": str(b), "weight": 2.0}]}
    merge_models(_write(tmp_path, cfg), tmp_path / "ta")
    want = wbase[name] + 0.5 * ((wa[name] - wbase[name]) + 2 * (wb[name] - wbase[name]))
    torch.testing.assert_close(_w(tmp_path / "ta")[name], want)

    cfg = {"method": "ties", "base_model": str(base), "parameters": {"density": 1.0},
           "models": [{"path": str(a)}, {"path": str(b)}]}
    merge_models(_write(tmp_path, cfg), tmp_path / "ties")
    ta, tb = wa[name] - wbase[name], wb[name] - wbase[name]
    # two models, density 1: where signs agree the mean, where they differ the larger-magnitude one
    want = wbase[name] + torch.where(torch.sign(ta) == torch.sign(tb), (ta + tb) / 2,
                                     torch.where(ta.abs() > tb.abs(), ta, tb))
    torch.testing.assert_close(_w(tmp_path / "ties")[name], want)


def test_slerp_and_dare_reload_in_transformers(family, tmp_path):
    from transformers import AutoModelForCausalLM

    base, a, b = family
    merge_models(_write(tmp_path, {"method": "slerp", "parameters": {"t": 0.0},
                                   "models": [{"path": str(a)}, {"path": str(b)}]}), tmp_path / "s")
    wa = _w(a)
    torch.testing.assert_close(_w(tmp_path / "s")["model.norm.weight"], wa["model.norm.weight"])
    cfg = {"method": "dare_ties", "base_model": str(base), "parameters": {"density": 0.5, "seed": 3},
           "models": [{"path": str(a)}, {"path": str(b)}]}
    merge_models(_write(tmp_path, cfg), tmp_path / "d1")
    merge_models(_write(tmp_path, cfg), tmp_path / "d2")
    d1 = _w(tmp_path / "d1")
    assert all(torch.equal(d1[k], v) for k, v in _w(tmp_path / "d2").items())  # seeded: reproducible
    tau = d1["model.layers.0.mlp.up_proj.weight"] - _w(base)["model.layers.0.mlp.up_proj.weight"]
    assert 0.1 < (tau == 0).float().mean().item() < 0.5  # about 1/4 dropped by both models
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "d1")
    assert model.config.model_type == "llama"


def test_merge_config_errors(family, tmp_path):
    base, a, b = family
    with pytest.raises(ConfigError, match="set `base_model`"):
        merge_models(_write(tmp_path, {"method": "ties", "models": [{"path": str(a)}]}), tmp_path / "o")
    with pytest.raises(ConfigError, match="exactly 2"):
        merge_models(_write(tmp_path, {"method": "slerp", "models": [{"path": str(a)}] * 3}), tmp_path / "o")
    with pytest.raises(ConfigError, match="no default"):
        merge_models(_write(tmp_path, {"method": "linear", "models": [
            {"path": str(a), "weight": [{"match": "*mlp*", "value": 1.0}]}]}), tmp_path / "o")
    with pytest.raises(ConfigError, match="did you mean `parameters.density`"):
        merge_models(_write(tmp_path, {"method": "ties", "base_model": str(base), "parameters": {"densty": 0.5},
                                       "models": [{"path": str(a)}]}), tmp_path / "o")
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        merge_models(_write(tmp_path, {"method": "ties", "base_model": str(base), "parameters": {"density": 0.0},
                                       "models": [{"path": str(a)}]}), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_different_architectures_refused(family, tmp_path):
    from tunesmith.models.tiny import init_model

    base, a, _ = family
    small = init_model(tmp_path / "small", size="small", seed=0)
    with pytest.raises(UserError, match="one architecture"):
        merge_models(_write(tmp_path, {"method": "linear", "models": [{"path": str(a)}, {"path": str(small)}]}),
                     tmp_path / "o")


def test_example_merge_yaml_validates():
    from pathlib import Path

    from tunesmith.config import load_config
    from tunesmith.merge.config import MergeConfig, resolve

    cfg = load_config(Path(__file__).parents[2] / "examples" / "merge_ties.yaml", schema=MergeConfig)
    assert cfg.method == "ties" and cfg.parameters.density == 0.5
    assert resolve(cfg.models[0].weight, "model.layers.0.mlp.up_proj.weight") == 0.7
    assert resolve(cfg.models[0].weight, "model.layers.0.self_attn.q_proj.weight") == 0.5
