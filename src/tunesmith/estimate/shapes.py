"""The model's shapes, from its config alone: the model is built on the meta device (no weight is
read or allocated), so any transformers causal LM works, from a 2-layer test model to a 70B.

`ModelShape` is what the memory and FLOP formulas need: widths, layer count, heads, which MLP
kind (gated SwiGLU or plain), tied embeddings, and the parameter counts by role (decoder linears,
embeddings, LM head, norms/biases). `model_shape(source)` accepts a model directory, a config.json,
a GGUF file (its metadata is read, not its tensors) or a hub id found in the local cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int  # d
    layers: int  # L
    heads: int  # h
    kv_heads: int  # g (GQA: g < h)
    head_dim: int
    intermediate: int  # f
    vocab: int  # V
    gated_mlp: bool  # SwiGLU/GeGLU: gate and up projections (3 matrices) instead of 2
    tied: bool  # lm_head shares the input embedding matrix
    linear_params: int  # every nn.Linear in the decoder layers (what LoRA/QLoRA touch)
    embed_params: int  # input embedding (and positional embeddings, if any)
    head_params: int  # lm_head (0 when tied)
    other_params: int  # norms, biases, anything else
    linears: tuple[tuple[str, int, int], ...] = field(default=(), repr=False)  # (leaf name, d_in, d_out), one layer's worth × L
    meta_model: object = field(default=None, repr=False, compare=False)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embed_params + self.head_params + self.other_params

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in a matmul per token: decoder linears and the LM head (the
        embedding is a lookup; a tied head is a matmul with the embedding matrix)."""
        return self.linear_params + (self.embed_params if self.tied else self.head_params)


def _load_config(source: str, trust_remote_code: bool):
    from transformers import AutoConfig

    from ..models.convert import PACKAGED_MODELS, resolve_gguf

    p = resolve_gguf(source) if str(source).strip().lower() in PACKAGED_MODELS else Path(source).expanduser()
    try:
        if p.is_file() and p.suffix == ".gguf":
            return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name), p.stem
        if p.is_file() and p.name.endswith(".json"):
            raw = json.loads(p.read_text())
            if "model_type" not in raw:
                raise UserError(f"{p}: no `model_type` key; this does not look like a transformers config.json")
            from transformers import CONFIG_MAPPING

            cls = CONFIG_MAPPING[raw["model_type"]]
            return cls.from_dict(raw), p.parent.name or p.stem
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise UserError(f"{p} is a directory without config.json; point at a model directory, a config.json or a .gguf")
            return AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code), p.name
        if p.exists():
            raise UserError(f"{p}: expected a model directory, a config.json or a .gguf file")
        # A hub id: only the local cache is read (no network here), so the error says how to get it.
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=True), source
    except UserError:
        raise
    except KeyError as e:
        raise UserError(f"{source}: unknown model_type {e}; this transformers version cannot build it") from None
    except (OSError, ValueError) as e:
        raise UserError(f"could not read the config of {source}: {e}. Give a local model directory, its config.json, "
                        "or a .gguf file (a hub id must be in the local Hugging Face cache)") from None


def meta_model(source: str, trust_remote_code: bool = False):
    """(model on the meta device, display name)."""
    import torch
    from transformers import AutoModelForCausalLM

    config, name = _load_config(source, trust_remote_code)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError as e:
            raise UserError(f"{source}: not a causal LM transformers can build ({e})") from None
    return model, name


def _first(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def shape_of(model, name: str = "model") -> ModelShape:
    """Read the shapes and count parameters by role on a (meta) model."""
    import torch

    c = model.config
    c = getattr(c, "text_config", None) or c
    d = _first(c, "hidden_size", "n_embd", "d_model")
    L = _first(c, "num_hidden_layers", "n_layer", "num_layers")
    h = _first(c, "num_attention_heads", "n_head")
    g = _first(c, "num_key_value_heads", "n_kv_heads", default=h)
    head_dim = _first(c, "head_dim", default=None) or d // h
    f = _first(c, "intermediate_size", "n_inner", "ffn_dim", default=None) or 4 * d
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    seen: set[int] = set()
    linear = embed = head_n = other = 0
    linears: list[tuple[str, int, int]] = []
    for mod_name, mod in model.named_modules():
        direct = [p for p in mod.parameters(recurse=False) if id(p) not in seen]
        for p in direct:
            seen.add(id(p))
        n = sum(p.numel() for p in direct)
        if mod is head:
            head_n += 0 if tied else n
        elif isinstance(mod, torch.nn.Embedding):
            embed += n
        elif isinstance(mod, torch.nn.Linear) or mod.__class__.__name__ == "Conv1D":
            w = mod.weight
            linear += w.numel()
            other += n - w.numel()  # biases
            d_in, d_out = (mod.in_features, mod.out_features) if hasattr(mod, "in_features") else (w.shape[0], w.shape[1])
            linears.append((mod_name.rsplit(".", 1)[-1], d_in, d_out))
        else:
            other += n
    gated = any(n in ("gate_proj", "w3", "gate_up_proj") for n, _, _ in linears) or getattr(c, "hidden_act", "") in ("swiglu",)
    return ModelShape(name=name, hidden=d, layers=L, heads=h, kv_heads=g, head_dim=head_dim, intermediate=f,
                      vocab=_first(c, "vocab_size"), gated_mlp=gated, tied=tied, linear_params=linear, embed_params=embed,
                      head_params=head_n, other_params=other, linears=tuple(linears), meta_model=model)


def model_shape(source: str, trust_remote_code: bool = False) -> ModelShape:
    model, name = meta_model(source, trust_remote_code)
    return shape_of(model, name)
