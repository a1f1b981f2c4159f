"""Load a causal LM and its tokenizer from a local directory, a hub id or a `.gguf` file.

Safety first: weights are read only from safetensors (`use_safetensors=True`: a checkpoint that
ships only pickled `.bin` files is refused rather than unpickled), and `trust_remote_code` is off
unless the config turns it on. 8-bit and NF4 loading go through bitsandbytes, which also runs on
the CPU (>= 0.48), so QLoRA is real here too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import UserError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it and fp32 elsewhere (CPU bf16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return _DTYPES[name]


def resolve_model_path(path: str) -> str:
    """`model.path` as a directory transformers loads: a `.gguf` file (or a packaged model's name,
    e.g. smollm2-135m-instruct) is converted once into the cache (`models/convert.py`) and that
    directory is used from then on; anything else is returned as given."""
    from .convert import PACKAGED_MODELS, cached_conversion

    if str(path).lower().endswith(".gguf") or str(path).strip().lower() in PACKAGED_MODELS:
        return str(cached_conversion(path))
    return path


def _check_source(path: str) -> None:
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise UserError(f"`model.path` {path} exists but is not a model directory (no config.json inside)")
        has_st = any(p.glob("*.safetensors"))
        if not has_st and any(p.glob("*.bin")):
            raise UserError(
                f"`model.path` {path} has only pickled *.bin weights; tunesmith loads safetensors only "
                "(pickle can run code). Convert once with transformers: "
                "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
            )
        return
    looks_like_hub_id = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UserError(f"`model.path` {path} does not exist (expected a local model directory or a hub id like org/name)")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(path)
    _check_source(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(f"could not load the tokenizer of `model.path` {path}: {e}") from None
    # Training pads on the right; batched generation switches to the left itself.
    tok.padding_side = "right"
    return tok


def quantization_config(cfg: ModelConfig, compute_dtype: torch.dtype):
    if cfg.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_model(cfg: ModelConfig, compute_dtype: torch.dtype | None = None, device: torch.device | None = None,
               head: str = "causal"):
    """The model in `cfg.dtype` (frozen storage), quantized when asked, on `device`, in train mode off.
    head="score": the same backbone with a new scalar head (sequence classification, 1 label)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model_path(cfg.path)
    _check_source(path)
    dtype = resolve_dtype(cfg.dtype)
    device = device or best_device()
    kwargs = dict(
        dtype=dtype,
        attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
    )
    qcfg = quantization_config(cfg, compute_dtype or dtype)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": str(device) if device.type == "cpu" else device.index or 0}
    try:
        if head == "score":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load `model.path` {cfg.path}: {e}") from None
    if qcfg is None:
        model.to(device)
    model.eval()
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total); 4-bit weights are packed two per byte, so count their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None or p.__class__.__name__ == "Params4bit":
            n = 2 * n if p.dtype == torch.uint8 else n
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
