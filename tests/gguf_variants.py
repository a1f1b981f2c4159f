"""Tiny Qwen2 and Mistral models for the GGUF export tests (the model factory makes Llama only)."""

import json
from pathlib import Path


def make_variant(tiny_dir: Path, out: Path, arch: str) -> Path:
    """The tiny model's tokenizer on a freshly initialised Qwen2 (q/k/v biases, tied embeddings) or
    Mistral model of the same size."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    base = json.loads((tiny_dir / "config.json").read_text())
    kw = dict(vocab_size=base["vocab_size"], hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(tie_word_embeddings=True, **kw))
        with torch.no_grad():  # non-zero biases, so a dropped bias shows
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(tie_word_embeddings=False, **kw))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
