"""The GGUF writer without llama.cpp: metadata, vocabulary, chat template, tensor names and layouts,
read back with gguf's own reader. (llama.cpp loading them is in tests/integration/test_gguf_export.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest

import gguf  # noqa: E402

from tunesmith.errors import UserError  # noqa: E402
from tunesmith.export.gguf_export import export_gguf  # noqa: E402
from tunesmith.export.gguf_modelfile import modelfile_text, template_family  # noqa: E402
from tunesmith.export.gguf_write import permute_qk, pre_tokenizer_name, write_gguf  # noqa: E402
from gguf_variants import make_variant  # noqa: E402  (tests/ is on sys.path through its conftest.py)


def field(reader, key):
    return reader.fields[key].contents()


def test_permute_interleaves_the_rotary_halves_of_each_head():
    """One head of dim 4, rows [x0, x1, y0, y1] (HF rotate-half) -> [x0, y0, x1, y1] (llama.cpp);
    with two heads each head is permuted on its own."""
    w = np.array([[0], [1], [2], [3]], dtype=np.float32)
    assert permute_qk(w, 1)[:, 0].tolist() == [0, 2, 1, 3]
    w2 = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_qk(w2, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_pre_tokenizer_names(tiny_dir):
    tok_json = json.loads((tiny_dir / "tokenizer.json").read_text())
    assert pre_tokenizer_name(tok_json, Path("t.json")) == "gpt-2"
    qwen = {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
        {"type": "ByteLevel", "use_regex": False}]}}
    assert pre_tokenizer_name(qwen, Path("t.json")) == "qwen2"
    spm = {"model": {"type": "BPE", "byte_fallback": True}, "pre_tokenizer": {"type": "Metaspace"}}
    with pytest.raises(UserError, match=r"t\.json: .*byte fallback.*not supported"):
        pre_tokenizer_name(spm, Path("t.json"))


def test_llama_q8_0_file_carries_vocab_template_and_blocks(tiny_dir, tok, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "m.gguf"
    res = write_gguf(tiny_dir, tok, out, "Q8_0", "tiny")
    r = gguf.GGUFReader(out)
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert field(r, "general.architecture") == "llama"
    assert field(r, "llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert field(r, "llama.rope.dimension_count") == cfg["hidden_size"] // cfg["num_attention_heads"]
    # PITFALLS 8: the template the tokenizer renders is the one in the file, byte for byte
    assert field(r, "tokenizer.chat_template") == tok.chat_template
    assert field(r, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert tokens == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    types = field(r, "tokenizer.ggml.token_type")
    assert [types[i] for i in range(5)] == [gguf.TokenType.CONTROL] * 5  # <pad> <s> <|im_end|> <|im_start|> <unk>
    assert types[100] == gguf.TokenType.NORMAL
    assert field(r, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field(r, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert field(r, "tokenizer.ggml.add_bos_token") is True
    assert len(field(r, "tokenizer.ggml.merges")) > 100

    by_name = {t.name: t for t in r.tensors}
    want = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in
        ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(by_name) == want
    assert by_name["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert by_name["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    # 176-wide rows are 5.5 blocks of 32: kept at F16, and said so
    assert by_name["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert any("ffn_down" in f for f in res.fallbacks)

    hf = load_file(tiny_dir / "model.safetensors")
    q = by_name["blk.1.attn_q.weight"]
    back = gguf.quants.dequantize(q.data, q.tensor_type).reshape(hf["model.layers.1.self_attn.q_proj.weight"].shape)
    want_q = permute_qk(hf["model.layers.1.self_attn.q_proj.weight"], cfg["num_attention_heads"])
    step = np.abs(want_q).max() / 127
    assert np.abs(back - want_q).max() <= step * 0.51
    assert np.abs(back - hf["model.layers.1.self_attn.q_proj.weight"]).max() > step  # the permutation happened


def test_qwen2_keeps_biases_and_ties_output(tiny_dir, tok, tmp_path):
    from safetensors.numpy import load_file

    src = make_variant(tiny_dir, tmp_path / "qwen", "qwen2")
    out = tmp_path / "q.gguf"
    write_gguf(src, tok, out, "F32", "q")
    r = gguf.GGUFReader(out)
    assert field(r, "general.architecture") == "qwen2"
    by_name = {t.name: t for t in r.tensors}
    assert "output.weight" not in by_name  # tied: llama.cpp reuses token_embd
    hf = load_file(src / "model.safetensors")
    bias = np.asarray(by_name["blk.0.attn_q.bias"].data)
    assert np.array_equal(bias, hf["model.layers.0.self_attn.q_proj.bias"])
    w = np.asarray(by_name["blk.0.attn_q.weight"].data)  # no permutation for Qwen2 (NeoX RoPE)
    assert np.array_equal(w, hf["model.layers.0.self_attn.q_proj.weight"])


def test_mistral_maps_to_llama_arch(tiny_dir, tok, tmp_path):
    src = make_variant(tiny_dir, tmp_path / "mistral", "mistral")
    out = tmp_path / "m.gguf"
    write_gguf(src, tok, out, "F16", "m")
    r = gguf.GGUFReader(out)
    assert field(r, "general.architecture") == "llama"
    assert {t.tensor_type.name for t in r.tensors if len(t.shape) == 2} == {"F16"}


def test_unsupported_architecture_is_a_clear_error(tiny_dir, tmp_path):
    import shutil

    bad = tmp_path / "gpt"
    shutil.copytree(tiny_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"config\.json: architectures=\['GPTNeoXForCausalLM'\] is not supported"):
        export_gguf(bad, tmp_path / "x.gguf", quant="F16", verify=False)


def test_export_argument_errors(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="--quant 'Q7' is not a GGUF type"):
        export_gguf(tiny_dir, tmp_path / "x.gguf", quant="Q7", verify=False)
    with pytest.raises(UserError, match="should end in .gguf"):
        export_gguf(tiny_dir, tmp_path / "x.bin", quant="F16", verify=False)
    with pytest.raises(UserError, match="is not a directory"):
        export_gguf(tmp_path / "nope", tmp_path / "x.gguf", quant="F16", verify=False)
    (tmp_path / "x.gguf").write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export_gguf(tiny_dir, tmp_path / "x.gguf", quant="F16", verify=False)
    assert (tmp_path / "x.gguf").read_bytes() == b"mine"


def test_unverified_export_writes_file_modelfile_and_report(tiny_dir, tmp_path):
    res = export_gguf(tiny_dir, tmp_path / "m.gguf", quant="F16", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.Modelfile", "m.gguf", "m.report.md"]
    assert "not verified" in res.report.read_text()
    assert res.tensor_types["F16"] == 16 and res.tensor_types["F32"] == 5


def test_modelfile_for_chatml(tok):
    assert template_family(tok) == "chatml"
    text = modelfile_text("m.Q4_K_M.gguf", tok)
    assert text.splitlines()[1] == "FROM ./m.Q4_K_M.gguf"
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text


def test_modelfile_without_a_known_template(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert template_family(tok) is None
    text = modelfile_text("m.gguf", tok)
    assert "TEMPLATE" not in text.replace("# TEMPLATE", "")
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_nll_by_hand():
    """Row 1: logits [0, 0], target 0: log(e^0 + e^0) - 0 = ln 2.
    Row 2: logits [ln 3, 0], target 0: log(3 + 1) - ln 3 = ln(4/3)."""
    from tunesmith.export.gguf_verify import _nll

    got = _nll(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]), np.array([0, 0]))
    assert np.allclose(got, [np.log(2.0), np.log(4.0 / 3.0)], atol=1e-12)


def test_eval_windows_start_with_bos_and_cover_the_text(tok, tmp_path):
    from tunesmith.export.gguf_export import eval_windows

    text = tmp_path / "held_out.txt"
    text.write_text("The fox walks to the park. " * 40, encoding="utf-8")
    windows = eval_windows(tok, text, window=32, max_windows=100)
    assert all(w[0] == tok.bos_token_id and len(w) <= 32 for w in windows)
    ids = tok(text.read_text(), add_special_tokens=False)["input_ids"]
    assert [i for w in windows for i in w[1:]] == ids[: sum(len(w) - 1 for w in windows)]
    assert sum(len(w) - 1 for w in windows) >= len(ids) - 2
    (tmp_path / "tiny.txt").write_text("a", encoding="utf-8")
    with pytest.raises(UserError, match="too little text"):
        eval_windows(tok, tmp_path / "tiny.txt")
