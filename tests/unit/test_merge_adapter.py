"""Adapter merge: merged forward = adapter forward (fp32), unmerge restores, weighted sums, DoRA/IA3,
and a QLoRA adapter merged into the dequantized 4-bit base (PITFALLS 15)."""

import pytest
import torch
import yaml

from tunesmith.errors import UserError
from tunesmith.models.bnb_cpu import use_portable_cpu_kernel
from tunesmith.merge.adapter import merge_adapter
from tunesmith.merge.verify import probe_ids


def _base(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def _make_adapter(tiny_dir, tok, path, peft_config, seed=0, quantized=None, sidecar=True):
    """A PEFT adapter with non-zero weights (as after training), saved with the tokenizer as `tunesmith
    train` saves it (with tunesmith_adapter.json), or (sidecar=False) as PEFT alone / older runs did."""
    from peft import get_peft_model

    from tunesmith.adapters import save_adapter

    torch.manual_seed(seed)
    model = get_peft_model(quantized if quantized is not None else _base(tiny_dir), peft_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "ia3_l" in name:
                p.add_(torch.randn_like(p) * 0.1)
    if sidecar:
        save_adapter(model, path)
    else:
        model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return model.eval()


def _lora(r=4, alpha=8, **kw):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM", **kw)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_merge_equals_adapter_forward_and_unmerge_restores(tiny_dir, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    peft_model = _make_adapter(tiny_dir, tok, tmp_path / "a", _lora())
    ids = probe_ids(tok)
    want = _logits(peft_model, ids)
    summary = merge_adapter(tiny_dir, tmp_path / "a", tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert (want - _logits(merged, ids)).abs().max().item() < 1e-5
    assert not any("lora" in k for k in merged.state_dict())
    assert summary["max_logit_diff"] < 1e-5 and (tmp_path / "out" / "report.md").is_file()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == ["model.safetensors"]
    # Unmerge: PEFT subtracts the same delta it added, so the base weights come back.
    w0 = peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    peft_model.merge_adapter()
    assert not torch.allclose(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, w0)
    peft_model.unmerge_adapter()
    torch.testing.assert_close(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, w0,
                               atol=1e-6, rtol=0)


def test_weighted_merge_is_weighted_sum_of_deltas(tiny_dir, tok, tmp_path):
    """W = W0 + 0.7 * (8/4) B1 A1 + 0.3 * (16/8) B2 A2, checked on q_proj of layer 0 by hand."""
    from safetensors.torch import load_file

    a1 = _make_adapter(tiny_dir, tok, tmp_path / "a1", _lora(4, 8), seed=1)
    a2 = _make_adapter(tiny_dir, tok, tmp_path / "a2", _lora(8, 16), seed=2)
    merge_adapter(tiny_dir, [tmp_path / "a1", tmp_path / "a2"], tmp_path / "out", weights=[0.7, 0.3])
    got = load_file(tmp_path / "out" / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    w0 = _base(tiny_dir).model.layers[0].self_attn.q_proj.weight
    q1, q2 = (m.base_model.model.model.layers[0].self_attn.q_proj for m in (a1, a2))
    delta1 = q1.lora_B["default"].weight @ q1.lora_A["default"].weight * 2.0
    delta2 = q2.lora_B["default"].weight @ q2.lora_A["default"].weight * 2.0
    torch.testing.assert_close(got, w0 + 0.7 * delta1 + 0.3 * delta2, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dora", "ia3"])
def test_dora_and_ia3_merge_equal_adapter_forward(tiny_dir, tok, tmp_path, kind):
    from peft import IA3Config
    from transformers import AutoModelForCausalLM

    cfg = (_lora(use_dora=True) if kind == "dora" else
           IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"], task_type="CAUSAL_LM"))
    peft_model = _make_adapter(tiny_dir, tok, tmp_path / "a", cfg)
    ids = probe_ids(tok)
    merge_adapter(tiny_dir, tmp_path / "a", tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert (_logits(peft_model, ids) - _logits(merged, ids)).abs().max().item() < 1e-4


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_qlora_adapter_merges_into_dequantized_base(tiny_dir, tok, tmp_path, quantization):
    """PITFALLS 15: the merged model must match quantized base + adapter (what training saw), not the
    fp32 original + adapter; the two differ by the rounding error of the 4/8-bit base."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
         if quantization == "nf4" else BitsAndBytesConfig(load_in_8bit=True))
    base_q = AutoModelForCausalLM.from_pretrained(tiny_dir, quantization_config=q, device_map={"": "cpu"},
                                                  dtype=torch.float32)
    use_portable_cpu_kernel(base_q)  # one 4-bit CPU path on every machine (models/bnb_cpu.py)
    adapter = tmp_path / "run" / "adapter"
    # A run saved before the sidecar existed: the quantization comes from the run's config.yaml.
    peft_q = _make_adapter(tiny_dir, tok, adapter, _lora(), quantized=base_q, sidecar=False)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"model": {"quantization": quantization,
                                                                            "double_quant": True}}))
    ids = probe_ids(tok)
    want = _logits(peft_q, ids)
    summary = merge_adapter(tiny_dir, adapter, tmp_path / "out")
    assert summary["base_quantization"] == quantization
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert not hasattr(merged.config, "quantization_config")
    merge_adapter(tiny_dir, adapter, tmp_path / "naive", base_quantization="none")
    naive = AutoModelForCausalLM.from_pretrained(tmp_path / "naive", dtype=torch.float32)
    if quantization == "nf4":  # NF4 computes dequant(W) x in fp32: the logits must match
        err_right = (want - _logits(merged, ids)).abs().max().item()
        err_naive = (want - _logits(naive, ids)).abs().max().item()
    else:  # LLM.int8 also rounds the activations, so compare weights: dequant(W8) = CB * SCB / 127, + B A s
        qp = peft_q.base_model.model.model.layers[0].self_attn.q_proj
        scb = qp.base_layer.weight.SCB if qp.base_layer.weight.SCB is not None else qp.base_layer.state.SCB
        deq = qp.base_layer.weight.data.float() * scb.float()[:, None] / 127  # (after a forward SCB moves to state)
        want_w = deq + qp.lora_B["default"].weight @ qp.lora_A["default"].weight * qp.scaling["default"]
        err_right = (merged.model.layers[0].self_attn.q_proj.weight - want_w).abs().max().item()
        err_naive = (naive.model.layers[0].self_attn.q_proj.weight - want_w).abs().max().item()
    assert err_right < 1e-5 and err_naive > 10 * err_right, (err_right, err_naive)


def test_merge_errors_name_the_fix(tiny_dir, tok, tmp_path):
    _make_adapter(tiny_dir, tok, tmp_path / "a", _lora())
    with pytest.raises(UserError, match="one weight per adapter"):
        merge_adapter(tiny_dir, tmp_path / "a", tmp_path / "out", weights=[0.5, 0.5])
    with pytest.raises(UserError, match="not a PEFT adapter directory"):
        merge_adapter(tiny_dir, tmp_path, tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        merge_adapter(tiny_dir, tmp_path / "a", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_failed_verification_is_an_error_and_writes_nothing(tiny_dir, tok, tmp_path, monkeypatch):
    import tunesmith.merge.adapter as adapter_mod
    from tunesmith.merge.io import VerificationError

    _make_adapter(tiny_dir, tok, tmp_path / "a", _lora())
    monkeypatch.setattr(adapter_mod, "max_logit_diff", lambda a, b: 1.0)  # as if the merge had gone wrong
    with pytest.raises(VerificationError, match="differ from the adapter's"):
        merge_adapter(tiny_dir, tmp_path / "a", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
