"""Write a `transformers` Llama / Mistral / Qwen2 model directory as one GGUF file.

The file format, tensor names, tensor encodings and the special-token / merge metadata come from the
`gguf` package (maintained in llama.cpp's repository); what is written here by hand is only the
mapping a converter must own: which Hugging Face config keys become which GGUF keys, the Q/K row
permutation of Llama-style checkpoints, which tensors are quantized, and the vocabulary with its
token types. It follows what llama.cpp's `convert_hf_to_gguf.py` does for these architectures.

Supported tokenizers: byte-level BPE (GPT-2 style, as in our tiny models, GPT-2, Qwen2, Llama 3).
SentencePiece-style tokenizers (Llama 2, Mistral v0.1: Metaspace + byte fallback) are refused with a
clear message rather than written half-right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

# HF architecture -> (GGUF architecture, permute Q/K rows). llama.cpp applies "normal" RoPE to the
# `llama` arch, which wants the rotary halves of each head interleaved; HF Llama/Mistral store them
# in two halves, hence the permutation. Qwen2 uses NeoX RoPE in llama.cpp: no permutation.
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}

# Pre-tokenizer split regexes -> the `tokenizer.ggml.pre` name llama.cpp knows them by.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}

# Types gguf-py writes itself (bit-exact with llama.cpp's reference quantizer for Q8_0).
DIRECT_TYPES = ("F32", "F16", "BF16", "Q8_0")


@dataclass
class WriteResult:
    path: Path
    n_tensors: int
    fallbacks: list[str] = field(default_factory=list)  # "name (shape): F16 instead of Q8_0"


def read_hf_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise UserError(f"--model {model_dir} is not a transformers model directory (no config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def gguf_arch(hf_config: dict, model_dir: Path) -> tuple[str, bool]:
    archs = hf_config.get("architectures") or []
    for name in archs:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UserError(
        f"{model_dir / 'config.json'}: architectures={archs} is not supported by `tunesmith export "
        f"--format gguf`; supported: {', '.join(ARCHITECTURES)}"
    )


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a Q or K projection from HF's rotate-half RoPE layout to llama.cpp's
    interleaved one: within each head, rows [x0..x(d/2-1), y0..y(d/2-1)] become [x0, y0, x1, y1, ...]."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_theta(hf_config: dict) -> float:
    params = hf_config.get("rope_parameters") or {}
    return float(hf_config.get("rope_theta", params.get("rope_theta", 10000.0)))


def _rope_scaling(hf_config: dict, model_dir: Path) -> tuple[str, float] | None:
    scaling = hf_config.get("rope_scaling") or hf_config.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return None
    if kind == "linear":
        return "linear", float(scaling["factor"])
    raise UserError(f"{model_dir / 'config.json'}: rope scaling {kind!r} is not supported by the GGUF "
                    "exporter yet (only none and linear)")


def add_hparams(writer, hf_config: dict, model_dir: Path, file_type: int, name: str) -> None:
    import gguf

    c = hf_config
    n_head = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_head
    writer.add_name(name)
    writer.add_context_length(c.get("max_position_embeddings", 2048))
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(c.get("num_key_value_heads", n_head))
    writer.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(rope_theta(c))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != c["hidden_size"] // n_head:  # Mistral-Nemo style explicit head_dim
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if (scaling := _rope_scaling(c, model_dir)) is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling[1])
    writer.add_vocab_size(c["vocab_size"])
    writer.add_file_type(file_type)


def pre_tokenizer_name(tokenizer_json: dict, where: Path) -> str:
    """The llama.cpp pre-tokenizer that splits text the way this tokenizer.json does."""
    model = tokenizer_json.get("model", {})
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or pre.get("type") == "Metaspace":
        raise UserError(
            f"{where}: a {model.get('type')} tokenizer"
            f"{' with byte fallback (SentencePiece style)' if model.get('byte_fallback') else ''} is not "
            "supported by the GGUF exporter yet; it writes byte-level BPE tokenizers (GPT-2, Qwen2, Llama 3 style)"
        )
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence" and _is_digits_then_gpt2(pre.get("pretokenizers", [])):
        return "smollm"  # SmolLM/StarCoder style: every digit alone, then GPT-2's split
    if pre.get("type") == "Sequence":
        for p in pre.get("pretokenizers", []):
            regex = (p.get("pattern") or {}).get("Regex")
            if p.get("type") == "Split" and regex in PRE_TOKENIZERS:
                return PRE_TOKENIZERS[regex]
    raise UserError(f"{where}: the pre-tokenizer {json.dumps(pre)[:200]} matches none llama.cpp knows "
                    f"(GPT-2 byte-level, {', '.join(PRE_TOKENIZERS.values())})")


def _is_digits_then_gpt2(parts: list[dict]) -> bool:
    return (len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
            and parts[1].get("type") == "ByteLevel" and parts[1].get("use_regex", True))


def add_vocab(writer, tokenizer, model_dir: Path, vocab_size: int) -> None:
    """Token list, token types, merges, special ids, add-BOS/EOS and the chat template."""
    import gguf

    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{model_dir}: the tokenizer has no tokenizer.json (a slow tokenizer); the GGUF exporter "
                        "reads the vocabulary, merges and pre-tokenizer from tokenizer.json")
    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = pre_tokenizer_name(tok_json, model_dir / "tokenizer.json")
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"{model_dir}: the tokenizer has ids up to {max(vocab.values())} but config.json "
                        f"vocab_size is {vocab_size}; the embedding matrix cannot hold them")
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # padding rows of an embedding matrix rounded up in size
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    # What the tokenizer really does decides add_bos/add_eos, not what a config file claims.
    probe = tokenizer("a")["input_ids"]
    special.add_special_token = {
        "bos": tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id],
        "eos": tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id],
    }
    # PITFALLS 8: the template the loaded tokenizer renders is the one carried in the file.
    special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def tensor_type(name: str, shape: tuple[int, ...], want: str) -> str:
    """What a tensor is stored as: vectors (norms, biases) stay F32 as llama.cpp expects; a matrix
    whose rows do not split into whole blocks falls back to F16 (as convert_hf_to_gguf does)."""
    import gguf

    if len(shape) < 2 or want == "F32":
        return "F32"
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[want]][0]
    return want if shape[-1] % block == 0 else "F16"


def encode_tensor(data: np.ndarray, qtype: str) -> tuple[np.ndarray, object | None]:
    import gguf

    if qtype == "F32":
        return data.astype(np.float32), None
    if qtype == "F16":
        return data.astype(np.float16), None
    t = gguf.GGMLQuantizationType[qtype]
    return gguf.quants.quantize(data.astype(np.float32), t), t


def iter_hf_tensors(model_dir: Path):
    """(name, fp32 numpy array) for every tensor of the model's safetensors shards."""
    import torch
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"--model {model_dir} has no *.safetensors weights (tunesmith reads safetensors only)")
    for f in files:
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name).to(torch.float32).numpy()


def write_gguf(model_dir: Path, tokenizer, out: Path, out_type: str, name: str) -> WriteResult:
    """Write `model_dir` to `out` with its 2-D weights stored as `out_type` (one of DIRECT_TYPES).

    Tensors are held in memory until the file is written (fine up to a few billion parameters on
    a machine that could load the model in fp32 anyway)."""
    import gguf
    from tqdm import tqdm

    hf_config = read_hf_config(model_dir)
    arch, permute = gguf_arch(hf_config, model_dir)
    n_head = hf_config["num_attention_heads"]
    n_kv = hf_config.get("num_key_value_heads", n_head)
    n_blocks = hf_config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_blocks)
    file_type = gguf.LlamaFileType.ALL_F32 if out_type == "F32" else gguf.LlamaFileType[f"MOSTLY_{out_type}"]

    writer = gguf.GGUFWriter(out, arch)
    add_hparams(writer, hf_config, model_dir, int(file_type), name)
    add_vocab(writer, tokenizer, model_dir, hf_config["vocab_size"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    result = WriteResult(out, 0)
    for hf_name, data in tqdm(list(iter_hf_tensors(model_dir)), desc="gguf tensors", unit="tensor", leave=False):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_freq_base
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UserError(f"{model_dir}: tensor {hf_name!r} has no GGUF name for arch {arch}; "
                            "the checkpoint has parts the exporter does not know")
        if permute and hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_kv)
        qtype = tensor_type(new_name, data.shape, out_type)
        if qtype != out_type and data.ndim >= 2:
            result.fallbacks.append(f"{new_name} {tuple(data.shape)}: {qtype} (rows of {data.shape[-1]} "
                                    f"do not split into {out_type} blocks)")
        encoded, raw_dtype = encode_tensor(data, qtype)
        writer.add_tensor(new_name, encoded, raw_dtype=raw_dtype)
        result.n_tensors += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return result
