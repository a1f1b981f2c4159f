"""PITFALLS 28: an adapter merge into a model with tied input/output embeddings. A LoRA on `lm_head`
or `embed_tokens` changes one side of the shared tensor: the merge breaks the tie on purpose and says
so in config.json, and the reloaded merged model computes exactly what the adapter computed. An
adapter that touches neither side keeps the tie. (Before merge/tied.py the first two were refused:
merged logits off by 6 and 574.)"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tunesmith.merge.adapter import merge_adapter


@pytest.fixture(scope="module")
def tied_base(tmp_path_factory, tiny_dir):
    from gguf_variants import make_variant

    return make_variant(tiny_dir, tmp_path_factory.mktemp("tied") / "qwen2", "qwen2")  # tie_word_embeddings=True


def _adapter(base, out, targets: list[str]):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    peft_model.save_pretrained(out)
    ids = torch.tensor([[5, 17, 40, 99, 3, 250, 7]])
    with torch.no_grad():
        return out, peft_model.eval()(ids).logits, ids


@pytest.mark.parametrize("targets,untied", [(["lm_head"], ["lm_head"]), (["embed_tokens"], ["model.embed_tokens"]),
                                            (["q_proj", "v_proj"], [])])
def test_merge_into_tied_embeddings(tied_base, tmp_path, targets, untied):
    from transformers import AutoModelForCausalLM

    adapter, want, ids = _adapter(tied_base, tmp_path / "adapter", targets)
    s = merge_adapter(tied_base, adapter, tmp_path / "merged", base_quantization="none")
    assert s["untied_embeddings"] == untied
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["tie_word_embeddings"] is (not untied)
    with safe_open(tmp_path / "merged" / "model.safetensors", framework="pt") as f:
        assert ("lm_head.weight" in f.keys()) is bool(untied)  # the output tensor is written only when untied
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert (merged.lm_head.weight is merged.model.embed_tokens.weight) is (not untied)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, want, atol=1e-4, rtol=1e-4)
    assert ("tie is broken on purpose" in (tmp_path / "merged" / "report.md").read_text()) is bool(untied)
