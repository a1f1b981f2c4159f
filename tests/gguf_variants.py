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


def make_split_regex_model(out: Path, regex: str, arch: str) -> Path:
    """A model whose tokenizer pre-splits with `regex` then maps bytes (Qwen2 / Llama 3 style: a
    Split pre-tokenizer before a regex-free ByteLevel), no BOS, ChatML; trained on the built-in text."""
    import torch
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from tunesmith.models.corpus import builtin_corpus

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(builtin_corpus(n_docs=500) + ["it's 2026; x=3.14!\n\n  two  spaces"],
                           trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"], clean_up_tokenization_spaces=False,
        chat_template=("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                       "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"))
    kw = dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, max_position_embeddings=512, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(tie_word_embeddings=True, **kw))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(tie_word_embeddings=False, **kw))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
