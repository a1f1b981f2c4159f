"""`tunesmith export --format gguf` end to end, checked by llama.cpp itself (llama-cpp-python).

tiny model -> SFT (full fine-tuning, so the result is a merged transformers directory) -> GGUF F16,
Q8_0, Q4_K_M -> llama.cpp loads each; F16/Q8_0 greedy tokens equal transformers' token for token,
Q4_K_M reports agreement and perplexity; the chat template in the file renders like the tokenizer's.
Qwen2, Mistral and Qwen2/Llama-3 style pre-tokenizers load and verify too. The verifier itself is
shown to fail on broken files (Q/K permutation left out; wrong pre-tokenizer name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'tunesmith[gguf]'); GGUF checks in llama.cpp skipped")
import gguf  # noqa: E402

from tunesmith.cli import main as cli_main  # noqa: E402
from tunesmith.export import gguf_write  # noqa: E402
from tunesmith.export.gguf_export import VerificationError, export_gguf  # noqa: E402
from tunesmith.export.gguf_quant import quantize_with_llama_cpp  # noqa: E402
from tunesmith.train.run import train  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory, tiny_dir, alpaca64) -> Path:
    """The tiny model after 60 steps of full-parameter SFT (a merged transformers directory): its
    next-token predictions depend on the words before them, so a wrong attention layout shows."""
    root = tmp_path_factory.mktemp("sft")
    cfg = {
        "model": {"path": str(tiny_dir), "dtype": "fp32"},
        "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
        "adapter": {"type": "none"},
        "train": {"precision": "fp32", "max_steps": 60, "lr": 3e-3, "micro_batch_size": 8, "grad_accum_steps": 1,
                  "warmup_steps": 0, "save_every": 0, "progress": False, "seed": 0},
        "output_dir": str(root / "run"),
    }
    path = root / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train(path, [])
    return root / "run" / "model"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, sft_model) -> Path:
    """Chats of the SFT task the model never saw (another seed), rendered by its own template."""
    from rows import alpaca_rows
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_model)
    chats = [[{"role": "user", "content": f"{r['instruction']} {r['input']}".strip()},
              {"role": "assistant", "content": r["output"]}] for r in alpaca_rows(32, seed=1)]
    path = tmp_path_factory.mktemp("eval") / "held_out.txt"
    path.write_text("".join(tok.apply_chat_template(c, tokenize=False) for c in chats), encoding="utf-8")
    return path


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q4_K_M"])
def test_export_verified_in_llama_cpp(sft_model, held_out, tmp_path, quant):
    res = export_gguf(sft_model, tmp_path / f"m.{quant}.gguf", quant=quant, eval_file=held_out)
    v = res.verification
    assert v["passed"], v["failures"]
    assert not v["tokenizer_mismatches"] and not v["template_problem"]
    assert len(v["greedy"]) == 5
    if quant in ("F16", "Q8_0"):
        assert all(g["hf"] == g["gguf"] for g in v["greedy"]), v["greedy"]
        assert v["top1_agreement"] >= 0.97
    else:
        assert v["top1_agreement"] >= 0.6 and v["ppl_increase"] < 0.30
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"m.{quant}.{s}" for s in ("gguf", "Modelfile", "report.md", "verify.json"))
    assert "**PASSED**" in res.report.read_text()
    assert res.size_bytes == (tmp_path / f"m.{quant}.gguf").stat().st_size


def test_q4_k_m_has_k_quant_blocks_when_rows_allow(tiny_dir, tmp_path):
    """The tiny model's 64-wide rows are too short for 256-wide K-quant super-blocks (llama.cpp falls
    back to Q5_0/Q8_0 for them); a 256-wide model gets real Q4_K/Q6_K tensors, and still verifies."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "wide")
    tok.save_pretrained(tmp_path / "wide")
    res = export_gguf(tmp_path / "wide", tmp_path / "wide.gguf", quant="Q4_K_M")
    assert res.tensor_types.get("Q4_K", 0) >= 4 and res.tensor_types.get("Q6_K", 0) >= 1, res.tensor_types
    assert res.verification["passed"]


def test_cli_prints_what_it_wrote_and_the_verification(sft_model, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert cli_main(["export", "--model", str(sft_model), "--out", str(out), "--quant", "Q8_0"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verification in llama.cpp: PASSED" in printed
    # a second run does not clobber without --overwrite: one line, exit 2
    assert cli_main(["export", "--model", str(sft_model), "--out", str(out), "--quant", "Q8_0"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_chat_template_in_the_file_renders_like_the_tokenizer(sft_model, tmp_path):
    """PITFALLS 8, read back by llama.cpp (not by our own reader)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_model)
    path = tmp_path / "t.gguf"
    export_gguf(sft_model, path, quant="F16", verify=False)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    conv = [{"role": "user", "content": "Spell the word cat."}, {"role": "assistant", "content": "c-a-t"},
            {"role": "user", "content": "And dog?"}]
    rendered = Jinja2ChatFormatter(template, eos_token=tok.eos_token, bos_token=tok.bos_token)(messages=conv).prompt
    assert rendered == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ids = llm.tokenize(rendered.encode(), add_bos=False, special=True)
    assert ids == tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True, return_dict=False)
    llm.close()


def test_a_broken_file_fails_verification_and_is_not_written(sft_model, held_out, tmp_path, monkeypatch):
    """Leave out the Q/K permutation (the classic converter bug): llama.cpp then computes another
    model, and the export must stop instead of shipping it."""
    monkeypatch.setattr(gguf_write, "permute_qk", lambda w, n_head: w)
    out = tmp_path / "broken.gguf"
    with pytest.raises(VerificationError, match="failed verification in llama.cpp"):
        export_gguf(sft_model, out, quant="F16", eval_file=held_out)
    assert not out.exists()
    assert "**FAILED**" in (tmp_path / "broken.report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.report.md"]  # no temp file left behind


def test_a_quantized_file_far_outside_its_noise_fails(sft_model, held_out, tmp_path, monkeypatch):
    """Q8_0 blocks written in the wrong row order (the float file it is judged against stays right):
    the KL divergence against llama.cpp's float file is whole nats, far outside Q8_0's noise."""
    real = gguf_write.encode_tensor

    def rows_reversed(data, qtype):
        encoded, raw = real(data, qtype)
        return (encoded[::-1].copy() if qtype == "Q8_0" else encoded), raw

    monkeypatch.setattr(gguf_write, "encode_tensor", rows_reversed)
    with pytest.raises(VerificationError, match="not quantization noise but a broken file"):
        export_gguf(sft_model, tmp_path / "x.Q8_0.gguf", quant="Q8_0", eval_file=held_out)
    assert not (tmp_path / "x.Q8_0.gguf").exists()
    assert "## Q8_0 quantization noise" in (tmp_path / "x.Q8_0.report.md").read_text()


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_qwen2_and_mistral_verified(tiny_dir, tmp_path, arch):
    """Freshly initialised (untrained) models: F32 so that llama.cpp and torch agree to rounding."""
    from gguf_variants import make_variant

    src = make_variant(tiny_dir, tmp_path / arch, arch)
    res = export_gguf(src, tmp_path / f"{arch}.gguf", quant="F32")
    assert res.verification["passed"], res.verification["failures"]
    assert abs(res.verification["ppl_increase"]) < 1e-3


def test_llama_cpp_q4_0_and_q8_0_blocks_equal_gguf_quants(tiny_dir, tok, tmp_path):
    """PITFALLS 17 against llama.cpp itself: its quantizer's Q4_0 / Q8_0 bytes for a 64x64 matrix are
    exactly what gguf.quants computes (and what tests/unit/test_gguf_blocks.py builds by hand)."""
    src = tmp_path / "f32.gguf"
    gguf_write.write_gguf(tiny_dir, tok, src, "F32", "t")
    f32 = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(src).tensors}
    for quant, qtype in (("Q4_0", gguf.GGMLQuantizationType.Q4_0), ("Q8_0", gguf.GGMLQuantizationType.Q8_0)):
        dst = tmp_path / f"{quant}.gguf"
        quantize_with_llama_cpp(src, dst, quant)
        t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.0.attn_q.weight")
        assert t.tensor_type == qtype
        want = gguf.quants.quantize(f32["blk.0.attn_q.weight"], qtype)
        assert np.array_equal(np.asarray(t.data).reshape(want.shape), want)


@pytest.mark.parametrize("pre,arch", [("qwen2", "qwen2"), ("llama-bpe", "llama")])
def test_split_regex_tokenizers_tokenize_identically_in_llama_cpp(tmp_path, pre, arch):
    """Qwen2- and Llama-3-style pre-tokenizers: the file names the right `tokenizer.ggml.pre`, and
    llama.cpp splits digits, spaces, newlines and unicode exactly as the tokenizer does."""
    from gguf_variants import make_split_regex_model

    from tunesmith.export.gguf_write import PRE_TOKENIZERS

    regex = next(r for r, name in PRE_TOKENIZERS.items() if name == pre)
    src = make_split_regex_model(tmp_path / pre, regex, arch)
    res = export_gguf(src, tmp_path / f"{pre}.gguf", quant="F32")
    assert gguf.GGUFReader(res.gguf).fields["tokenizer.ggml.pre"].contents() == pre
    assert res.verification["passed"], res.verification["failures"]
    assert gguf.GGUFReader(res.gguf).fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_a_wrong_pre_tokenizer_name_fails_verification(tmp_path, monkeypatch):
    """Label a Qwen2-style tokenizer `gpt-2`: llama.cpp then splits "\\n" and digits differently,
    and the tokenizer check stops the export."""
    from gguf_variants import make_split_regex_model

    from tunesmith.export.gguf_write import PRE_TOKENIZERS

    regex = next(r for r, name in PRE_TOKENIZERS.items() if name == "qwen2")
    src = make_split_regex_model(tmp_path / "m", regex, "qwen2")
    monkeypatch.setattr(gguf_write, "pre_tokenizer_name", lambda tok_json, where: "gpt-2")
    with pytest.raises(VerificationError, match="llama.cpp tokenizes .* differently from transformers"):
        export_gguf(src, tmp_path / "x.gguf", quant="F32")
    assert not (tmp_path / "x.gguf").exists()


def test_lora_sft_then_merge_then_gguf(sft_model, alpaca64, held_out, tmp_path):
    """The whole chain a user runs: LoRA SFT on a fine-tuned model -> `tunesmith merge` ->
    `tunesmith export` (Q8_0), and llama.cpp reproduces the merged model's greedy tokens. (On a
    barely trained model greedy paths part at exact near-ties, margin ~2e-3 logits: the verifier
    tolerates those, see NEAR_TIE; this model is sharp enough to need no tolerance.)"""
    from tunesmith import api

    cfg = {
        "model": {"path": str(sft_model), "dtype": "fp32"},
        "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"precision": "fp32", "max_steps": 30, "lr": 5e-3, "micro_batch_size": 8, "grad_accum_steps": 1,
                  "warmup_steps": 0, "save_every": 0, "progress": False, "seed": 0},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "lora.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "lora.yaml", [])
    api.merge(tmp_path / "merged", base=sft_model, adapter=tmp_path / "run" / "adapter")
    res = export_gguf(tmp_path / "merged", tmp_path / "merged.Q8_0.gguf", quant="Q8_0", eval_file=held_out)
    v = res.verification
    assert v["passed"], v["failures"]
    assert all(g["hf"] == g["gguf"] for g in v["greedy"]), v["greedy"]
