"""Config errors name the key and the fix; overrides are typed; nothing heavy runs before validation."""

import pytest

from tunesmith.config import load_config, parse_overrides, validate_config
from tunesmith.errors import ConfigError

BASE = {"model": {"path": "m"}}


def _err(raw) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    return str(e.value)


def test_defaults_are_real_values():
    cfg = validate_config(BASE)
    assert cfg.method == "sft" and cfg.adapter.type == "lora" and cfg.train.lr == 2e-4
    assert cfg.data.train == [] and cfg.data.on_error == "raise" and cfg.model.quantization == "none"


def test_unknown_key_is_named_with_a_suggestion():
    msg = _err({**BASE, "train": {"learning_rate": 1e-4, "lr": 1e-4}})
    assert "`train.learning_rate` is not a config key" in msg
    msg = _err({**BASE, "train": {"max_step": 3}})
    assert "did you mean `train.max_steps`?" in msg


def test_wrong_type_and_value_name_the_key():
    assert "`train.micro_batch_size`" in _err({**BASE, "train": {"micro_batch_size": "four"}})
    msg = _err({**BASE, "adapter": {"type": "lorra"}})
    assert "`adapter.type`" in msg and "'lora'" in msg
    assert "`model.quantization`" in _err({"model": {"path": "m", "quantization": "nf5"}})


def test_missing_model_path():
    assert "`model` is required" in _err({})
    assert "`model.path` is required" in _err({"model": {}})


def test_exclusive_warmup_message():
    msg = _err({**BASE, "train": {"warmup_steps": 10, "warmup_ratio": 0.1}})
    assert "`train.warmup_steps` and `train.warmup_ratio` are exclusive; set one" in msg


def test_quantized_full_finetune_is_refused():
    msg = _err({"model": {"path": "m", "quantization": "nf4"}, "adapter": {"type": "none"}})
    assert "adapter.type: lora" in msg


def test_overrides_are_parsed_as_yaml_values():
    tree = parse_overrides(["train.lr=1e-4", "data.train=[a.jsonl, b.jsonl]", "data.packing=true", "model.path=x/y"])
    assert tree == {"train": {"lr": 1e-4}, "data": {"train": ["a.jsonl", "b.jsonl"], "packing": True}, "model": {"path": "x/y"}}
    cfg = load_config(None, ["model.path=m", "train.max_steps=7", "data.train=one.jsonl"])
    assert cfg.train.max_steps == 7 and cfg.data.train == ["one.jsonl"]


def test_bad_override_and_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="`train.lrr` is not a config key"):
        load_config(None, ["model.path=m", "train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: m\ntrain: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_file_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {path: m}\ntrain: {lr: 0.001, max_steps: 5}\n")
    cfg = load_config(p, ["train.lr=3e-4"])
    assert cfg.train.lr == 3e-4 and cfg.train.max_steps == 5
    assert "lr: 0.0003" in cfg.dump()
