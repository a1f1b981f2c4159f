"""`tunesmith convert` (GGUF in): a GGUF written by our own exporter converts back to a transformers
directory whose logits equal the original's, for each supported architecture; bad inputs are
refused with the fix; model.path may name a .gguf file (converted once, then cached)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tunesmith.errors import UserError
from tunesmith.models import convert
from tunesmith.models.convert import cached_conversion, convert_gguf, resolve_gguf


def _write_gguf(model_dir: Path, out: Path, quant: str = "F32") -> Path:
    from transformers import AutoTokenizer

    from tunesmith.export.gguf_write import write_gguf

    write_gguf(model_dir, AutoTokenizer.from_pretrained(model_dir), out, quant, model_dir.name)
    return out


def _logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_round_trip_logits_equal(tmp_path, tiny_dir, arch):
    """HF -> GGUF (our writer, F32) -> convert -> HF: same logits, same token ids, same template."""
    from gguf_variants import make_variant
    from transformers import AutoTokenizer

    src = tiny_dir if arch == "llama" else make_variant(tiny_dir, tmp_path / arch, arch)
    out = convert_gguf(_write_gguf(src, tmp_path / f"{arch}.gguf"), tmp_path / "converted")
    tok_a, tok_b = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    text = tok_a.apply_chat_template([{"role": "user", "content": "Sort these words: cat, dog."}],
                                     tokenize=False, add_generation_prompt=True)
    assert tok_b.chat_template == tok_a.chat_template
    assert len(tok_b) == len(tok_a)  # no token past the embedding matrix (transformers appends <|endoftext|>)
    ids = tok_a(text, add_special_tokens=False)["input_ids"]
    assert tok_b(text, add_special_tokens=False)["input_ids"] == ids
    torch.testing.assert_close(_logits(out, ids), _logits(src, ids), atol=1e-4, rtol=1e-4)
    config = json.loads((out / "config.json").read_text())
    record = config["tunesmith_gguf_source"]
    assert record["quant_type"] == "ALL_F32" and record["dequantized"] is False
    assert config["tie_word_embeddings"] == json.loads((src / "config.json").read_text()).get("tie_word_embeddings", True)
    assert {"model.safetensors", "tokenizer.json", "generation_config.json", "config.json"} <= {p.name for p in out.iterdir()}


def test_quantized_source_is_recorded_as_lossy(tmp_path, tiny_dir, capsys):
    """`tunesmith convert` of a Q8_0 file: config.json and the command both say it is not the original."""
    from tunesmith.cli import main

    out = tmp_path / "converted"
    assert main(["convert", str(_write_gguf(tiny_dir, tmp_path / "q8.gguf", "Q8_0")), "--out", str(out)]) == 0
    assert "NOT the original fp16 model" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())["tunesmith_gguf_source"]
    assert record["quant_type"] == "Q8_0" and record["dequantized"] is True
    assert "NOT the original fp16 model" in record["note"]


def test_existing_output_is_never_clobbered(tmp_path, tiny_dir):
    """A folder of the user's files is refused, with or without --overwrite (io.py's rule for every
    stage); a converted model is replaced only with --overwrite."""
    gguf = _write_gguf(tiny_dir, tmp_path / "m.gguf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="--overwrite"):
            convert_gguf(gguf, out, overwrite=overwrite)
    assert (out / "keep.txt").read_text() == "mine"
    converted = tmp_path / "converted"
    convert_gguf(gguf, converted)
    with pytest.raises(UserError, match="--overwrite"):
        convert_gguf(gguf, converted)
    (converted / "extra.txt").write_text("from the first conversion")
    convert_gguf(gguf, converted, overwrite=True)
    assert not (converted / "extra.txt").exists() and (converted / "config.json").is_file()
    assert (converted / ".tunesmith.json").is_file()


def test_bad_sources_are_refused(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="neither a .gguf file nor a known model name"):
        resolve_gguf(str(tmp_path / "missing.gguf"))
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        resolve_gguf(str(not_gguf))
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install 'tunesmith\[real\]'"):
        resolve_gguf("SmolLM2-135M-Instruct")


def test_unsupported_architecture_is_refused(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UserError, match="architecture 'gpt2' is not supported"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_path_gguf_is_converted_once(tmp_path, tiny_dir, monkeypatch):
    """load_model/load_tokenizer accept a .gguf `model.path`; the second load reuses the cache, and a
    rewritten file (new mtime) gets a fresh conversion."""
    from tunesmith.config import ModelConfig
    from tunesmith.models.loading import load_model, load_tokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    gguf_path = _write_gguf(tiny_dir, tmp_path / "m.gguf")
    calls = []
    real = convert.convert_gguf
    monkeypatch.setattr(convert, "convert_gguf", lambda *a, **k: calls.append(a) or real(*a, **k))
    model = load_model(ModelConfig(path=str(gguf_path), dtype="fp32"), device=torch.device("cpu"))
    tok = load_tokenizer(str(gguf_path))
    assert len(calls) == 1 and tok.chat_template and model.config.vocab_size >= len(tok)
    first = cached_conversion(gguf_path)
    assert first.parent == tmp_path / "cache" / "gguf" and len(calls) == 1
    os.utime(gguf_path, ns=(1, 1))
    assert cached_conversion(gguf_path) != first and len(calls) == 2


def test_digit_splitting_pre_tokenizer_survives_the_round_trip(tmp_path, tiny_dir):
    """SmolLM2's tokenizer isolates every digit before GPT-2's split (llama.cpp: `smollm`). The exporter
    names it `smollm`, and convert writes it back (transformers' GGUF reader alone would fall back to
    GPT-2's split, which keeps " 2026" in one piece)."""
    import shutil

    import gguf
    from transformers import AutoTokenizer

    src = tmp_path / "digits"
    shutil.copytree(tiny_dir, src)
    data = json.loads((src / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (src / "tokenizer.json").write_text(json.dumps(data))
    path = _write_gguf(src, tmp_path / "digits.gguf")
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "smollm"
    out = convert_gguf(path, tmp_path / "converted")
    assert json.loads((out / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"][0]["type"] == "Digits"
    text = "In 2026, 12345 cats ate 3.14 fish."
    want = AutoTokenizer.from_pretrained(src)(text, add_special_tokens=False)["input_ids"]
    assert AutoTokenizer.from_pretrained(out)(text, add_special_tokens=False)["input_ids"] == want

