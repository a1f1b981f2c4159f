"""GGUF export of the real model (SmolLM2-135M-Instruct: byte-level BPE with the `smollm` pre-tokenizer,
49,152 tokens, ChatML template with a default system prompt, tied embeddings), checked by llama.cpp:
its token ids equal transformers' on code, numbers, emoji, accents and whitespace runs; F16 and Q8_0
decode greedily like transformers; Q8_0 / Q4_K_M noise against the float file is measured and stays
in the expected range; the exported tokenizer metadata equals the original GGUF's."""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'tunesmith[gguf]'); GGUF checks in llama.cpp skipped")
import gguf  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TEXTS = [
    "def add(a, b):\n    return a + b  # sum\n",
    "for i in range(10):\n\tprint(f'{i:03d} -> {i ** 2}')\n",
    "Prices: $3.14, 1,234,567.89 and 2026-11-29 at 09:45; x=1;y=22;z=333",
    "Emoji 🙂🚀 and a ZWJ family 👩‍👩‍👧 and ❤️",
    "Accents: naïve café, Ærøskøbing, São Paulo, Straße, ĳssel",
    "whitespace   runs\t\t and\n\n\n   newlines    \n",
    "   leading spaces and trailing  ",
    "日本語のテキストと中文，한국어",
    "<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n",
    "It's, we'll, they're: I'M SHOUTING!!!",
]


@pytest.fixture(scope="module")
def exports(smollm2_dir, tmp_path_factory):
    """F16, Q8_0 and Q4_K_M exports of the converted model, each verified by `tunesmith export`."""
    from tunesmith.export.gguf_export import export_gguf

    d = tmp_path_factory.mktemp("real_gguf")
    out = {}
    for quant in ("F16", "Q8_0", "Q4_K_M"):
        res = export_gguf(smollm2_dir, d / f"smollm2.{quant}.gguf", quant=quant)
        v = res.verification
        noise = v["noise"] or {}
        print(f"\n{quant}: {res.size_bytes / 2**20:.1f} MiB, ppl {v['ppl_gguf']:.4f} vs {v['ppl_hf']:.4f} "
              f"({100 * v['ppl_increase']:+.2f}%), top-1 vs transformers {100 * v['top1_agreement']:.2f}%, "
              f"greedy same prefix {[g['same_prefix'] for g in v['greedy']]}, "
              f"KLD {noise.get('mean_kld', 0):.5f}, same top {100 * noise.get('same_top_p', 1):.2f}%")
        out[quant] = res
    return out


def _vocab_only(path: Path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def test_llama_cpp_token_ids_equal_transformers(smollm2_dir, exports):
    """On the exported F16 file and on the original Q4_1 file the model came from."""
    from transformers import AutoTokenizer

    from tunesmith.models.convert import resolve_gguf

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    for path in (exports["F16"].gguf, resolve_gguf("smollm2-135m-instruct")):
        llm = _vocab_only(path)
        for text in TEXTS:
            want = tok(text, add_special_tokens=False)["input_ids"]
            assert list(llm.tokenize(text.encode(), add_bos=False, special=True)) == want, (path.name, text)
            assert llm.detokenize(want, special=True).decode("utf-8") == text
        llm.close()


def test_exported_tokenizer_metadata_equals_the_original(exports):
    from tunesmith.models.convert import resolve_gguf

    original = gguf.GGUFReader(resolve_gguf("smollm2-135m-instruct")).fields
    for quant, res in exports.items():
        ours = gguf.GGUFReader(res.gguf).fields
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                    "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                    "tokenizer.ggml.add_bos_token", "tokenizer.chat_template", "llama.vocab_size",
                    "llama.rope.freq_base", "llama.attention.head_count_kv", "llama.context_length"):
            assert ours[key].contents() == original[key].contents(), (quant, key)
        # Tied embeddings: no separate output tensor, as in the original.
        assert "output.weight" not in {t.name for t in gguf.GGUFReader(res.gguf).tensors}


def test_exports_pass_verification_and_decode_like_transformers(exports):
    from tunesmith.export.gguf_verify import NEAR_TIE

    for quant, res in exports.items():
        v = res.verification
        assert v["passed"], (quant, v["failures"])
        assert not v["tokenizer_mismatches"] and not v["template_problem"]
        exact = v["reference"] or v  # the float file: the conversion itself
        assert exact["top1_agreement"] >= 0.99 and abs(exact["ppl_increase"]) < 0.005, exact
        assert all(g["same_prefix"] == len(g["hf"]) or g["margin"] <= NEAR_TIE for g in exact["greedy"])
    q8 = exports["Q8_0"].verification
    # Q8_0 (activations quantized too): greedy parts from fp32 only where transformers' top two are close.
    assert all(g["same_prefix"] >= 8 or g["margin"] < 0.5 for g in q8["greedy"]), q8["greedy"]
    # Measured: KLD 0.0040 nats (LLaMA 3 8B: 0.0014), same top token 95.4% (97.7%), ppl +0.17% vs fp32.
    assert q8["noise"]["same_top_p"] >= 0.93 and q8["noise"]["mean_kld"] < 0.01, q8["noise"]
    q4 = exports["Q4_K_M"].verification
    assert q8["noise"]["mean_kld"] < q4["noise"]["mean_kld"] < q4["noise"]["max_mean_kld"]
    assert exports["F16"].size_bytes > exports["Q8_0"].size_bytes > exports["Q4_K_M"].size_bytes
