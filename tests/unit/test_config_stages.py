"""Issue 16: the config split by stage keeps its imports; keys that would be silently ignored are
refused; derived values (precision, storage dtype, prompt budget) are methods, not rewrites."""

import pytest

from tunesmith.config import RunConfig, load_config, validate_config
from tunesmith.config.loading import _describe
from tunesmith.errors import ConfigError

BASE = {"model": {"path": "m"}}
PREF = {**BASE, "method": "dpo"}


def _err(raw) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    return str(e.value)


def test_old_imports_still_work():
    from tunesmith.config import (AdapterConfig, DataConfig, EvalConfig, JudgeConfig, ModelConfig,  # noqa: F401
                                  PrepareConfig, TrainConfig, _merge, merge_dicts, parse_overrides, read_yaml)
    assert _merge is merge_dicts
    assert merge_dicts({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


@pytest.mark.parametrize("method", ["reward", "dpo", "kto"])
@pytest.mark.parametrize("key", ["packing", "train_on_prompt"])
def test_sft_data_keys_refused_for_preference_methods(method, key):
    raw = {**BASE, "method": method, "data": {key: True}, "train": {"micro_batch_size": 2}}
    msg = _err(raw)
    assert f"`data.{key}` applies to method sft/pretrain, not {method}" in msg and "remove it" in msg
    validate_config({**BASE, "method": "sft", "data": {key: True}})  # where it applies it is fine


@pytest.mark.parametrize("key, value, reading_loss", [("label_smoothing", 0.1, "sigmoid"), ("simpo_gamma", 1.0, "simpo"),
                                                       ("cpo_alpha", 0.5, "cpo")])
def test_loss_options_refused_for_losses_that_do_not_read_them(key, value, reading_loss):
    other = "ipo"
    msg = _err({**PREF, "preference": {"loss": other, key: value}})
    assert f"`preference.{key}` is not read by method dpo with loss {other}" in msg
    assert f"loss: {reading_loss}" in msg
    cfg = validate_config({**PREF, "preference": {"loss": reading_loss, key: value}})
    assert getattr(cfg.preference, key) == value
    assert f"`preference.{key}` is not read by method kto" in _err(
        {**BASE, "method": "kto", "train": {"micro_batch_size": 2}, "preference": {key: value}})


def test_loss_options_at_default_reload_from_a_dump():
    """A dumped config.yaml writes every key; defaults must not trip the refusal."""
    cfg = validate_config({**PREF, "preference": {"loss": "ipo"}})
    import yaml
    assert validate_config(yaml.safe_load(cfg.dump())).preference.loss == "ipo"


def test_epochs_next_to_max_steps_is_stated_not_silent():
    """Decision: not an error (`train.max_steps=20` on the command line is how a config with epochs gets
    a short trial run), but train start says that epochs is not used."""
    cfg = validate_config({**BASE, "train": {"epochs": 3, "max_steps": 10}})
    assert cfg.start_notes() == ["`train.max_steps: 10` decides the length; `train.epochs: 3` is not used "
                                 "(set train.max_steps=0 to train by epochs)"]
    assert validate_config({**BASE, "train": {"max_steps": 10}}).start_notes() == []
    assert validate_config({**BASE, "train": {"epochs": 3}}).start_notes() == []


def test_prompt_length_defaults_to_half_of_max_length():
    """Before: max_prompt_length defaulted to 512, an error whenever data.max_length <= 512."""
    cfg = validate_config({**PREF, "data": {"max_length": 256}})
    assert cfg.preference.max_prompt_length == 0 and cfg.prompt_length() == 128
    assert validate_config(PREF).prompt_length() == 512  # max_length 2048: the old default
    assert validate_config({**PREF, "preference": {"max_prompt_length": 40}, "data": {"max_length": 64}}).prompt_length() == 40


def test_dpo_section_is_a_deprecated_alias(capsys):
    cfg = validate_config({**PREF, "dpo": {"beta": 0.3}})
    assert cfg.preference.beta == 0.3 and cfg.dpo is cfg.preference
    assert "`dpo:` section is now called `preference:`" in capsys.readouterr().err
    assert "preference:" in cfg.dump() and "\ndpo:" not in cfg.dump()
    cfg = load_config(None, ["model.path=m", "method=dpo", "dpo.loss=ipo"])
    assert cfg.preference.loss == "ipo"
    assert "keep `preference:` only" in _err({**PREF, "dpo": {"beta": 0.3}, "preference": {"beta": 0.2}})
    with pytest.raises(AttributeError):
        cfg.dpo = cfg.preference  # read-only


def test_resolved_precision_and_dtype_are_derived_not_rewritten():
    cfg = validate_config(BASE)
    assert cfg.train.compute_precision(bf16_ok=True) == "bf16" and cfg.train.compute_precision(bf16_ok=False) == "fp32"
    assert cfg.model.storage_dtype("bf16", bf16_ok=True) == "bf16"
    # fp32 compute on a bf16 GPU keeps the frozen weights in fp32 too.
    assert cfg.model.storage_dtype("fp32", bf16_ok=True) == "fp32"
    fixed = validate_config({"model": {"path": "m", "dtype": "fp16"}, "train": {"precision": "fp32"}})
    assert fixed.model.storage_dtype("fp32", bf16_ok=True) == "fp16" and fixed.train.compute_precision(bf16_ok=True) == "fp32"
    pinned = cfg.resolved()
    assert pinned.train.precision in ("bf16", "fp32") and pinned.model.dtype in ("bf16", "fp32")
    assert cfg.train.precision == "auto" and cfg.model.dtype == "auto"  # the user's config is left as written


def test_describe_drops_union_branch_tags_but_keeps_list_indices():
    msg = _err({**BASE, "adapter": {"target_modules": 5}})
    assert "`adapter.target_modules` = 5" in msg and "target_modules.str" not in msg and "list[str]" not in msg
    assert "`data.train.1` = 3" in _err({**BASE, "data": {"train": ["a.jsonl", 3]}})
    err = {"loc": ("eval", "pass_k", 0), "type": "int_parsing", "msg": "bad", "input": "x"}
    assert _describe(err, RunConfig).startswith("`eval.pass_k.0`")


def test_full_logits_reason_names_a_trained_lm_head():
    assert validate_config(BASE).full_logits_reason() == ""
    cfg = validate_config({**BASE, "adapter": {"modules_to_save": ["lm_head"]}})
    assert "`adapter.modules_to_save` trains lm_head" in cfg.full_logits_reason() and "full" in cfg.full_logits_reason()
    cfg = validate_config({**BASE, "adapter": {"target_modules": ["q_proj", "lm_head"]}})
    assert "`adapter.target_modules` puts an adapter on lm_head" in cfg.full_logits_reason()
    assert validate_config({**BASE, "adapter": {"modules_to_save": ["embed_tokens"]}}).full_logits_reason() == ""
