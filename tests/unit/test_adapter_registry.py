"""The adapter registry and what a saved adapter records about itself.

One spec per `adapter.type`; config validation and every stage agree with it. A saved adapter carries
`tunesmith_adapter.json` (type, task type, base quantization), so a QLoRA adapter copied out of its
run directory is still merged on the base it was trained on, and an adapter that says nothing is
refused rather than merged on a guessed base.
"""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.adapters import (SPECS, adapter_warnings, allowed_options, apply_adapter, closed_form_trainable,
                                get_spec, save_adapter, training_quantization)
from tunesmith.config import _ADAPTER_OPTIONS, AdapterConfig
from tunesmith.errors import ConfigError, UserError


def _base(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def test_config_options_are_the_registry_options():
    """config.py's table of which `adapter.*` key applies to which type is the registry's, key for key."""
    assert {k: set(v) for k, v in allowed_options().items()} == {k: set(v) for k, v in _ADAPTER_OPTIONS.items()}
    config_types = set(AdapterConfig.model_fields["type"].annotation.__args__) - {"none"}
    assert set(SPECS) == config_types


def test_every_spec_counts_and_says_why_it_cannot_merge(tiny_dir):
    base = _base(tiny_dir)
    for name, spec in SPECS.items():
        assert spec.can_merge == (name in ("lora", "dora", "ia3")), name
        assert spec.can_merge or spec.merge_blocker
        assert closed_form_trainable(base, AdapterConfig(type=name))[0] > 0
    with pytest.raises(ConfigError, match="unknown adapter type 'lorax'; known: lora, dora"):
        get_spec("lorax")


def test_a_rank_above_a_layer_dimension_warns_naming_the_layer(tiny_dir):
    """The tiny model's k/v projections are 64 -> 32: r 48 cannot be reached there (r 16 can everywhere)."""
    base = _base(tiny_dir)
    assert adapter_warnings(base, AdapterConfig(type="lora", r=16)) == []
    (w,) = adapter_warnings(base, AdapterConfig(type="lora", r=48))
    assert "`adapter.r` = 48 is larger than layer model.layers.0.self_attn.k_proj (64 -> 32)" in w
    assert "and 3 more layer(s)" in w and "rank 32 at most" in w  # k and v in both layers
    (w,) = adapter_warnings(base, AdapterConfig(type="lora", r=8, rank_pattern={"down_proj": 100}))
    assert "`adapter.rank_pattern` = 100 is larger than layer model.layers.0.mlp.down_proj (176 -> 64)" in w
    assert adapter_warnings(base, AdapterConfig(type="ia3")) == []


def _lora_adapter(tiny_dir, tok, path, quantized=None):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(quantized if quantized is not None else _base(tiny_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False))
    save_adapter(model, path)
    tok.save_pretrained(path)
    return model


def test_a_qlora_adapter_copied_out_of_its_run_remembers_its_base(tiny_dir, tok, tmp_path):
    """The sidecar travels with the adapter directory; no config.yaml beside it is needed."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    base_q = AutoModelForCausalLM.from_pretrained(tiny_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                  device_map={"": "cpu"}, dtype=torch.float32)
    _lora_adapter(tiny_dir, tok, tmp_path / "copied", quantized=base_q)
    side = json.loads((tmp_path / "copied" / "tunesmith_adapter.json").read_text())
    assert side == {"adapter_type": "lora", "task_type": "CAUSAL_LM", "base_quantization": "int8", "double_quant": True}
    assert not (tmp_path / "config.yaml").exists()
    assert training_quantization(tmp_path / "copied") == ("int8", True)


def test_merge_refuses_to_guess_the_base_quantization(tiny_dir, tok, tmp_path):
    """An adapter saved by PEFT alone (or an old run's, copied out) with no config.yaml beside it, or
    an unreadable one, used to merge on the fp32 base silently; now it stops and names the flag."""
    from tunesmith.merge.adapter import merge_adapter

    _lora_adapter(tiny_dir, tok, tmp_path / "run" / "adapter")
    (tmp_path / "run" / "adapter" / "tunesmith_adapter.json").unlink()
    with pytest.raises(UserError, match="does not say which quantization .* pass --base-quantization none"):
        merge_adapter(tiny_dir, tmp_path / "run" / "adapter", tmp_path / "out")
    (tmp_path / "run" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="--base-quantization"):
        merge_adapter(tiny_dir, tmp_path / "run" / "adapter", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    summary = merge_adapter(tiny_dir, tmp_path / "run" / "adapter", tmp_path / "out", base_quantization="none")
    assert summary["base_quantization"] == "none"


def test_a_base_of_the_wrong_size_gives_a_short_error(tiny_dir, tok, tmp_path):
    """torch lists every mismatched tensor (28 lines here); the error keeps the first line and a count."""
    from tunesmith.merge.adapter import merge_adapter
    from tunesmith.models.tiny import init_model

    small = init_model(tmp_path / "small", size="small", seed=0)
    _lora_adapter(tiny_dir, tok, tmp_path / "a")
    with pytest.raises(UserError) as e:
        merge_adapter(small, tmp_path / "a", tmp_path / "out")
    msg = str(e.value)
    assert "was it trained on this base?" in msg and "tensors have a different shape" in msg
    assert len(msg.splitlines()) == 1 and len(msg) < 600, msg


def test_export_of_an_adapter_says_merge_first(tiny_dir, tok, tmp_path):
    from tunesmith.export.gguf_export import export_gguf

    _lora_adapter(tiny_dir, tok, tmp_path / "run" / "adapter")
    for given in (tmp_path / "run" / "adapter", tmp_path / "run"):
        with pytest.raises(UserError, match="is an adapter, not a full model; run `tunesmith merge --base BASE"):
            export_gguf(given, tmp_path / "m.gguf", quant="F16", verify=False)


def test_bottleneck_on_a_reward_model_trains_the_score_head(tiny_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=1)
    cfg = AdapterConfig(type="adapter", bottleneck={"size": 8})
    n, _ = closed_form_trainable(model, cfg, "SEQ_CLS")
    model = apply_adapter(model, cfg, task_type="SEQ_CLS")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "score.weight" in trainable and sum(model.get_parameter(t).numel() for t in trainable) == n


def test_eval_refuses_an_adapter_that_does_not_name_its_base_quantization(tiny_dir, tok, tmp_path):
    """Evaluation loads the base as the adapter was trained on it; unknown is refused, not taken as fp32."""
    from tunesmith.evaluate.run import Target, _load

    _lora_adapter(tiny_dir, tok, tmp_path / "a")
    model, _ = _load(Target("model", str(tiny_dir), str(tmp_path / "a")), "fp32")  # the sidecar says "none"
    assert model.peft_config["default"].r == 4
    (tmp_path / "a" / "tunesmith_adapter.json").unlink()
    with pytest.raises(UserError, match=r'does not say which quantization .*\{"base_quantization": "none"\}'):
        _load(Target("model", str(tiny_dir), str(tmp_path / "a")), "fp32")
