"""`tunesmith merge` and `tunesmith quantize` end to end on the tiny model, through the CLI:
train (LoRA / QLoRA) -> merge -> the merged model answers like the adapter and keeps the chat
template -> quantize (INT8, NF4, GPTQ, AWQ) -> a reader loads exactly the documented tensors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from tunesmith.cli import main

pytestmark = pytest.mark.integration
PROMPTS = ["Add 3 and 4.", "Spell the word cat.", "Repeat the words.\n\nred blue"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(tmp_path, tiny_dir, alpaca64, quantization: str):
    from tunesmith.train.run import train

    cfg = {"model": {"path": str(tiny_dir), "dtype": "fp32", "quantization": quantization},
           "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
           "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"precision": "fp32", "max_steps": 12, "micro_batch_size": 8, "grad_accum_steps": 1, "lr": 3e-3,
                     "save_every": 0, "progress": False, "seed": 0},
           "output_dir": str(tmp_path / f"run-{quantization}")}
    path = tmp_path / f"{quantization}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train(path)
    return tmp_path / f"run-{quantization}"


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_train_merge_answers_like_the_adapter(tmp_path, tiny_dir, alpaca64, quantization, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.evaluate.generation import greedy_answers
    from tunesmith.models.bnb_cpu import use_portable_cpu_kernel
    from tunesmith.models.loading import bnb_config

    run = _train(tmp_path, tiny_dir, alpaca64, quantization)
    out = tmp_path / "merged"
    assert main(["merge", "--base", str(tiny_dir), "--adapter", str(run / "adapter"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verified: merged logits = adapter logits" in printed

    kwargs = {"quantization_config": bnb_config("nf4"), "device_map": {"": "cpu"}} if quantization == "nf4" else {}
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, **kwargs)
    use_portable_cpu_kernel(base)  # one 4-bit CPU path on every machine (models/bnb_cpu.py)
    adapted = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok_run, tok_merged = AutoTokenizer.from_pretrained(run / "adapter"), AutoTokenizer.from_pretrained(out)
    assert greedy_answers(merged, tok_merged, PROMPTS) == greedy_answers(adapted, tok_run, PROMPTS)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert tok_merged.apply_chat_template(messages, tokenize=False) == tok_run.apply_chat_template(messages, tokenize=False)
    assert set(p.name for p in out.iterdir()) >= {"config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json", "report.md"}
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    report = (out / "report.md").read_text()
    assert f"quantization `{quantization}`" in report

    # never clobber without --overwrite; with it, replace
    assert main(["merge", "--base", str(tiny_dir), "--adapter", str(run / "adapter"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_merge_config_cli(tmp_path, tiny_dir, capsys):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump({"method": "slerp", "parameters": {"t": 0.3},
                                   "models": [{"path": str(tiny_dir)}, {"path": str(tiny_dir)}]}))
    assert main(["merge", "--config", str(cfg), "--out", str(tmp_path / "m")]) == 0
    assert "verified: from_pretrained loads all" in capsys.readouterr().out
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as a, safe_open(tiny_dir / "model.safetensors", "pt") as b:
        for k in b.keys():  # slerp of a model with itself is the model (up to float rounding)
            torch.testing.assert_close(a.get_tensor(k), b.get_tensor(k), atol=1e-6, rtol=1e-6)
    assert main(["merge", "--config", str(cfg), "--base", str(tiny_dir), "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err


QUANT_ARGS = ["--group-size", "16", "--samples", "8", "--seq-len", "64"]


@pytest.mark.parametrize("method", ["int8", "nf4", "gptq", "awq"])
def test_quantize_cli(tmp_path, tiny_dir, method, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / method
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(out), "--method", method, *QUANT_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "verified:" in printed and "unquantized" in printed
    report = (out / "report.md").read_text()
    assert "| original (fp32 compute) |" in report and f"| {method} |" in report
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    if method in ("int8", "nf4"):
        model = AutoModelForCausalLM.from_pretrained(out, device_map={"": "cpu"})  # no extra arguments needed
        kind = "Linear4bit" if method == "nf4" else "Linear8bitLt"
        assert sum(type(m).__name__ == kind for m in model.modules()) == 14  # 7 linears x 2 layers
        return
    assert qc["quant_method"] == method and qc["bits"] == 4 and qc["group_size"] == 16
    with safe_open(out / "model.safetensors", "pt") as f:
        names = set(f.keys())
        q = "model.layers.0.self_attn.q_proj"  # (out 64, in 64)
        expected = {"qweight": ((8, 64), torch.int32), "qzeros": ((4, 8), torch.int32), "scales": ((4, 64), torch.float16)}
        if method == "awq":
            expected["qweight"] = ((64, 8), torch.int32)
        else:
            expected["g_idx"] = ((64,), torch.int32)
        for suffix, (shape, dtype) in expected.items():
            t = f.get_tensor(f"{q}.{suffix}")
            assert (tuple(t.shape), t.dtype) == (shape, dtype), suffix
    assert f"{q}.weight" not in names and "model.embed_tokens.weight" in names and "lm_head.weight" in names
    assert sum(n.endswith(".qweight") for n in names) == 14


def test_quantize_refuses_bad_input(tmp_path, tiny_dir, capsys):
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(tmp_path / "a"), "--method", "q4"]) == 2
    assert "use one of int8, nf4, gptq, awq" in capsys.readouterr().err
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(tmp_path / "a"), "--method", "awq", "--bits", "8"]) == 2
    assert "4-bit only" in capsys.readouterr().err
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(tmp_path / "a"), "--method", "awq",
                 "--group-size", "48"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert main(["quantize", "--model", str(tmp_path), "--out", str(tmp_path / "a"), "--method", "nf4"]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_quantize_failed_verification_writes_nothing(tmp_path, tiny_dir, monkeypatch, capsys):
    """A quantized model that scores far worse than the original is an error, not a warning."""
    import tunesmith.export.quantize as q

    real = q.perplexity
    monkeypatch.setattr(q, "perplexity", lambda model, ids, desc="": real(model, ids) * (1 if "original" in desc else 3))
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(tmp_path / "q"), "--method", "nf4", *QUANT_ARGS]) == 2
    assert "the quantized model is broken" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
