"""`tunesmith merge --config merge.yaml --out DIR`: merge whole models of one architecture.

Tensors are read lazily from each model's safetensors (one tensor of each model in memory at a
time), merged in fp32 by the method from `methods.MERGE_METHODS`, cast to the output dtype and
written as a standard `transformers` directory (config, safetensors shards + index, tokenizer and
chat template). Before the output is kept, `from_pretrained` must load it with no missing or
unexpected tensor, every tensor equal to what was computed, and finite logits.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from ..console import progress_bar

from ..config import load_config
from ..errors import ConfigError, UserError
from .config import MergeConfig, resolve
from ..io import atomic_dir, atomic_write_text, check_output
from ..models.loading import stored_dtype
from .io import DTYPES, VerificationError, check_model_dir, copy_tokenizer_files, dir_size, read_json
from .methods import MERGE_METHODS, MergeParams
from .verify import compare_state_dicts, logits_on_probes, probe_ids

SHARD_BYTES = 5 * 1024**3
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class Weights:
    """Lazy access to the tensors of a safetensors model directory (single file or sharded)."""

    def __init__(self, path: Path):
        self.path = path
        index = path / "model.safetensors.index.json"
        if index.is_file():
            files = read_json(index)["weight_map"]
        else:
            files = {}
            for f in sorted(path.glob("*.safetensors")):
                with safe_open(f, "pt") as h:
                    files.update({k: f.name for k in h.keys()})
        self.files = files
        self._handles: dict[str, object] = {}

    def names(self) -> list[str]:
        return list(self.files)

    def shape(self, name: str) -> list[int]:
        return list(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def _handle(self, name: str):
        f = self.files[name]
        if f not in self._handles:
            self._handles[f] = safe_open(self.path / f, "pt")
        return self._handles[f]


def _check_compatible(ref: Weights, others: list[Weights]) -> None:
    ref_cfg = read_json(ref.path / "config.json")
    ref_names = set(ref.names())
    for w in others:
        cfg = read_json(w.path / "config.json")
        if cfg.get("model_type") != ref_cfg.get("model_type"):
            raise UserError(f"{w.path} is a {cfg.get('model_type')} model and {ref.path} a {ref_cfg.get('model_type')}; "
                            "merge models of one architecture")
        if set(w.names()) != ref_names:
            diff = sorted(set(w.names()) ^ ref_names)[:3]
            raise UserError(f"{w.path} and {ref.path} have different tensors (e.g. {diff}); merge models of one architecture")
        for name in ref.names():
            if w.shape(name) != ref.shape(name):
                raise UserError(f"tensor {name} is {w.shape(name)} in {w.path} but {ref.shape(name)} in {ref.path}; "
                                "merge models of one architecture and size")


def _params(cfg: MergeConfig, name: str, index: int) -> tuple[list[float], MergeParams]:
    weights = [resolve(m.weight, name) for m in cfg.models]
    densities = tuple(resolve(m.density if m.density is not None else cfg.parameters.density, name) for m in cfg.models)
    for i, d in enumerate(densities):
        if not 0.0 < d <= 1.0:
            raise ConfigError(f"density {d} of models.{i} for tensor {name}: must be in (0, 1]")
    density = densities[0] if len(set(densities)) == 1 else densities
    gen = torch.Generator().manual_seed(cfg.parameters.seed * 1_000_003 + index)
    return weights, MergeParams(density=density, t=resolve(cfg.parameters.t, name), normalize=cfg.parameters.normalize,
                                scale=cfg.parameters.scale, generator=gen)


def merge_tensors(cfg: MergeConfig, models: list[Weights], base: Weights | None, dtype: torch.dtype) -> dict:
    """name -> merged tensor in `dtype`; non-float tensors (buffers) must agree and are copied."""
    fn = MERGE_METHODS[cfg.method]
    ref = base or models[0]
    out = {}
    for i, name in enumerate(progress_bar(ref.names(), desc=f"merge ({cfg.method})", unit="tensor")):
        tensors = [m.get(name) for m in models]
        if not tensors[0].is_floating_point():
            if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                raise UserError(f"non-float tensor {name} differs between the models; cannot merge it")
            out[name] = tensors[0]
            continue
        weights, p = _params(cfg, name, i)
        merged = fn(tensors, weights, base.get(name) if base else None, p)
        out[name] = merged.to(dtype).contiguous()
    return out


def save_state_dict(state: dict, out: Path) -> list[str]:
    """model.safetensors, or shards of at most 5 GiB plus model.safetensors.index.json."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(state, max_shard_size=SHARD_BYTES)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n] for n in names}, str(out / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return sorted(split.filename_to_tensors)


def merge_models(config: str | Path, out: str | Path, overrides: list[str] | None = None, overwrite: bool = False) -> dict:
    """Merge the models listed in a merge.yaml; verify that `from_pretrained` loads exactly the result."""
    t0 = time.perf_counter()
    cfg: MergeConfig = load_config(config, overrides, schema=MergeConfig)
    models = [Weights(check_model_dir(m.path, f"models.{i}.path")) for i, m in enumerate(cfg.models)]
    base = Weights(check_model_dir(cfg.base_model, "base_model")) if cfg.base_model else None
    inputs = [m.path for m in cfg.models] + [cfg.base_model]
    out = check_output(out, "merge", overwrite=overwrite, inputs=inputs)
    ref = base or models[0]
    _check_compatible(ref, [m for m in models if m is not ref])
    dtype = DTYPES[cfg.dtype] if cfg.dtype != "auto" else stored_dtype(models[0].path)
    state = merge_tensors(cfg, models, base, dtype)
    tok_src = base.path if (cfg.tokenizer_from == "base" and base) else models[0].path
    with atomic_dir(out, "merge", overwrite=overwrite, inputs=inputs) as tmp:
        files = save_state_dict(state, tmp)
        model_cfg = dict(read_json(ref.path / "config.json"), dtype=_DTYPE_NAMES[dtype])
        model_cfg.pop("torch_dtype", None)
        (tmp / "config.json").write_text(json.dumps(model_cfg, indent=2))
        if (ref.path / "generation_config.json").is_file():
            shutil.copy2(ref.path / "generation_config.json", tmp / "generation_config.json")
        copied = copy_tokenizer_files(tok_src, tmp)
        diff = _verify(tmp, state, dtype)
        summary = {"out": str(out), "method": cfg.method, "models": [m.path for m in cfg.models],
                   "base_model": cfg.base_model, "dtype": _DTYPE_NAMES[dtype], "tensors": len(state), "files": files,
                   "tokenizer_files": copied, "tokenizer_from": str(tok_src), "probe_logits_max": diff,
                   "probe_checked": diff == diff,  # NaN: no tokenizer, so no probe forward was run
                   "seconds": round(time.perf_counter() - t0, 2)}
        atomic_write_text(tmp / "report.md", _report(cfg, summary))
    summary["size_bytes"] = dir_size(out)
    return summary


def _verify(path: Path, state: dict, dtype: torch.dtype) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise VerificationError(f"from_pretrained({path.name}) missing {sorted(info['missing_keys'])[:3]}, "
                                f"unexpected {sorted(info['unexpected_keys'])[:3]}")
    got = model.state_dict()
    compare_state_dicts({k: got[k] for k in state if k in got}, state, "reloaded merged model")
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        logits = logits_on_probes(model.eval(), probe_ids(AutoTokenizer.from_pretrained(path)))
        if not torch.isfinite(logits).all():
            raise VerificationError("the merged model gives non-finite logits")
        return logits.abs().max().item()
    return float("nan")


def _report(cfg: MergeConfig, s: dict) -> str:
    rows = "\n".join(f"| {m.path} | {m.weight if not isinstance(m.weight, list) else [r.model_dump() for r in m.weight]} |"
                     for m in cfg.models)
    return (f"# Merged model ({cfg.method})\n\nBase: `{cfg.base_model}`. Parameters: "
            f"`{cfg.parameters.model_dump()}`. Saved in {s['dtype']} as {', '.join(s['files'])}; "
            f"tokenizer from `{s['tokenizer_from']}`.\n\n| model | weight |\n|---|---|\n{rows}\n\n"
            "Verified: `from_pretrained` loads every tensor with none missing or unexpected, each equal to the "
            "computed merge" + (", and the logits on probe inputs are finite.\n" if s["probe_checked"] else
                                ". The logits were not checked: there is no tokenizer to make probe inputs with.\n"))
