"""Combinations of features that cannot work together are refused before anything loads, with a
message naming the keys; the combinations that do work validate."""

import pytest

from tunesmith.config import validate_config
from tunesmith.errors import ConfigError

BASE = {"model": {"path": "m"}}


def _err(**sections) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config({**BASE, **sections})
    return str(e.value)


@pytest.mark.parametrize("method", ["dpo", "kto", "reward"])
@pytest.mark.parametrize("kind", ["prefix", "prompt", "ptuning"])
def test_preference_methods_refuse_prompt_learning(method, kind):
    msg = _err(method=method, adapter={"type": kind}, train={"micro_batch_size": 2})
    assert f"`method: {method}`" in msg and f"`adapter.type: {kind}`" in msg


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_dpo_refuses_residual_inits(init):
    msg = _err(method="dpo", adapter={"type": "lora", "init": init})
    assert f"`adapter.init: {init}`" in msg and "reference" in msg


def test_fsdp_refuses_bottleneck_adapters_and_quantization():
    assert "`train.fsdp`" in _err(adapter={"type": "adapter"}, train={"fsdp": True})
    assert "`train.fsdp`" in _err(model={"path": "m", "quantization": "nf4"}, train={"fsdp": True})


@pytest.mark.parametrize("sections", [
    dict(method="dpo", adapter={"type": "lora"}),
    dict(method="dpo", adapter={"type": "dora"}),
    dict(method="kto", adapter={"type": "lora"}, train={"micro_batch_size": 2}),
    dict(method="reward", adapter={"type": "none"}),
    dict(method="sft", adapter={"type": "lora", "init": "pissa"}),
    dict(adapter={"type": "lora"}, train={"fsdp": True}),
])
def test_working_combinations_validate(sections):
    cfg = validate_config({**BASE, **sections})
    assert cfg.method == sections.get("method", "sft")
    assert cfg.adapter.type == sections["adapter"]["type"]


@pytest.mark.parametrize("method", ["dpo", "kto", "reward"])
def test_preference_methods_refuse_plain_logits(method):
    msg = _err(method=method, train={"loss_chunk_size": 0, "micro_batch_size": 2})
    assert "`train.loss_chunk_size: 0`" in msg and f"`method: {method}`" in msg
