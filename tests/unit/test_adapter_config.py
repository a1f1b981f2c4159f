"""`adapter.*` validation: every type is accepted with its own options, an option of another type is
an error naming the key, combinations that cannot work (packing with virtual tokens, PiSSA on a
quantized base, DoRA on int8) are refused naming both keys, a dumped config reloads, and the merge
table says which methods fold into the base."""

import pytest
import yaml

from tunesmith.adapters import METHODS, can_merge, require_mergeable
from tunesmith.config import AdapterConfig, validate_config
from tunesmith.errors import ConfigError, UserError

BASE = {"model": {"path": "m"}}
TYPES = ["lora", "dora", "ia3", "prefix", "prompt", "ptuning", "adapter"]


def _err(raw) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    return str(e.value)


@pytest.mark.parametrize("adapter", [
    {"type": "lora", "r": 8, "use_rslora": True, "init": "pissa", "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"q_proj": 8}},
    {"type": "dora", "r": 8, "init": "gaussian"},
    {"type": "ia3", "target_modules": ["k_proj", "v_proj", "down_proj"], "ia3": {"feedforward_modules": ["down_proj"]}},
    {"type": "prefix", "prefix": {"num_virtual_tokens": 10, "projection": True}},
    {"type": "prompt", "prompt": {"num_virtual_tokens": 10, "init_text": "Answer briefly."}},
    {"type": "ptuning", "ptuning": {"encoder": "lstm"}},
    {"type": "adapter", "bottleneck": {"size": 32, "after": ["mlp"], "nonlinearity": "gelu"}},
    {"type": "prompt", "modules_to_save": ["embed_tokens"]},
])
def test_each_type_with_its_options_validates_and_the_dump_reloads(adapter):
    cfg = validate_config({**BASE, "adapter": adapter})
    again = validate_config(yaml.safe_load(cfg.dump()))  # every sub-section dumped at its default must reload
    assert again == cfg


@pytest.mark.parametrize("adapter, key", [
    ({"type": "ia3", "r": 8}, "adapter.r"),
    ({"type": "prefix", "alpha": 8}, "adapter.alpha"),
    ({"type": "prompt", "target_modules": ["q_proj"]}, "adapter.target_modules"),
    ({"type": "adapter", "use_rslora": True}, "adapter.use_rslora"),
    ({"type": "ia3", "init": "pissa"}, "adapter.init"),
    ({"type": "lora", "prefix": {"num_virtual_tokens": 5}}, "adapter.prefix"),
    ({"type": "prompt", "ptuning": {"num_virtual_tokens": 5}}, "adapter.ptuning"),
    ({"type": "lora", "bottleneck": {"size": 8}}, "adapter.bottleneck"),
    ({"type": "dora", "ia3": {"feedforward_modules": ["down_proj"]}}, "adapter.ia3"),
    ({"type": "prefix", "rank_pattern": {"q": 2}}, "adapter.rank_pattern"),
])
def test_an_option_of_another_type_names_the_key(adapter, key):
    msg = _err({**BASE, "adapter": adapter})
    assert f"`{key}` applies to adapter.type" in msg and f"not {adapter['type']}; remove it" in msg


def test_unknown_sub_option_is_named():
    assert "`adapter.prefix.num_tokens` is not a config key; did you mean `adapter.prefix.num_virtual_tokens`?" in _err(
        {**BASE, "adapter": {"type": "prefix", "prefix": {"num_tokens": 5}}})
    assert "`adapter.bottleneck.after.0`" in _err({**BASE, "adapter": {"type": "adapter", "bottleneck": {"after": ["ffn"]}}})


@pytest.mark.parametrize("kind", ["prefix", "prompt", "ptuning"])
def test_packing_is_refused_for_virtual_tokens(kind):
    msg = _err({**BASE, "adapter": {"type": kind}, "data": {"packing": True}})
    assert "`data.packing: true` cannot be combined with `adapter.type: " + kind in msg and "set `data.packing: false`" in msg


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3", "adapter"])
def test_packing_is_fine_for_weight_methods(kind):
    assert validate_config({**BASE, "adapter": {"type": kind}, "data": {"packing": True}}).data.packing


@pytest.mark.parametrize("init", ["pissa", "olora"])
@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_pissa_olora_need_an_unquantized_base(init, quant):
    msg = _err({"model": {"path": "m", "quantization": quant}, "adapter": {"type": "lora", "init": init}})
    assert f"`adapter.init: {init}`" in msg and f"`model.quantization: {quant}`" in msg


def test_dora_int8_is_refused_and_nf4_accepted():
    assert "use `model.quantization: nf4` (QDoRA)" in _err({"model": {"path": "m", "quantization": "int8"}, "adapter": {"type": "dora"}})
    for t in TYPES:
        validate_config({"model": {"path": "m", "quantization": "nf4"}, "adapter": {"type": t}})


def test_prompt_learning_flag():
    assert [t for t in TYPES if AdapterConfig(type=t).is_prompt_learning()] == ["prefix", "prompt", "ptuning"]


def test_merge_table():
    assert {t for t in TYPES if can_merge(t)} == {"lora", "dora", "ia3"}
    assert set(METHODS) == set(TYPES)
    for t in ("prefix", "prompt", "ptuning", "adapter"):
        with pytest.raises(UserError, match=f"a `{t}` adapter cannot be merged into the base model"):
            require_mergeable(t)
    require_mergeable("dora")
    with pytest.raises(ConfigError, match="unknown adapter type 'loha'"):
        can_merge("loha")


def test_prefix_with_gradient_checkpointing_is_refused():
    msg = _err({**BASE, "adapter": {"type": "prefix"}, "train": {"gradient_checkpointing": True}})
    assert "`adapter.type: prefix` cannot be combined with `train.gradient_checkpointing: true`" in msg
    validate_config({**BASE, "adapter": {"type": "prompt"}, "train": {"gradient_checkpointing": True}})


def test_example_configs_validate():
    """Every example training YAML is a valid run config (the PEFT ones included)."""
    from pathlib import Path

    from tunesmith.config import load_config

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert {"sft_prompt_tuning.yaml", "sft_bottleneck.yaml"} <= {p.name for p in examples}
    for path in examples:
        if path.read_text().startswith("# tunesmith train "):  # merge configs have their own schema (test_merge_*)
            load_config(path)
