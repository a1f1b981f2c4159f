"""Stages refuse what would destroy the user's work or give a wrong result, before doing anything."""

import json

import pytest
from safetensors.torch import save_file
import torch

from tunesmith.config import DataConfig, PrepareConfig
from tunesmith.data.prepare.run import run_prepare
from tunesmith.errors import UserError
from tunesmith.merge.adapter import merge_adapter


def test_prepare_never_replaces_a_training_run(tmp_path):
    """`prepare cfg.yaml --overwrite` with the training config's output_dir must not rmtree the run."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi there, friend."}) + "\n")
    run = tmp_path / "run"
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {path: m}\n")
    with pytest.raises(UserError, match="holds a training run"):
        run_prepare(DataConfig(train=[str(data)]), PrepareConfig(progress=False), run, overwrite=True)
    assert (run / "checkpoints" / "step-2").is_dir() and (run / "config.yaml").is_file()


@pytest.mark.parametrize("peft_type", ["PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"])
def test_merge_refuses_adapters_that_are_not_a_weight_change(tmp_path, tiny_dir, peft_type):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "num_virtual_tokens": 4}))
    save_file({"prompt_embeddings": torch.zeros(4, 8)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(UserError, match="cannot be merged"):
        merge_adapter(tiny_dir, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()
