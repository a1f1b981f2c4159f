"""The adapters a server knows, which of them are in memory, and the checks before any is loaded.

Every adapter a client can name is registered here (name -> directory). At most `max_loaded` are
in memory at once; the least recently used one that no running sequence needs is evicted when
another must come in, and reloaded from disk the next time a request names it. Only the engine
thread changes the model (PEFT's `load_adapter` / `delete_adapter`), between decode steps, so a
load or unload never lands in the middle of a forward pass that other requests share.

Each adapter gets an internal PEFT name (`a0`, `a1`, ...): clients may name adapters
`org/name-v2`, and PEFT module dicts cannot hold dots; a reload after an unload gets a fresh one.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from ..adapters import read_sidecar
from ..adapters.registry import spec_of_peft
from ..console import say
from ..errors import UserError
from .errors import APIError

BASE = "__base__"  # PEFT's row name for "no adapter" in a mixed batch


@dataclass
class Adapter:
    name: str
    path: Path
    peft_name: str | None = None  # set while loaded
    last_used: int = 0
    in_use: int = 0  # running or admitted sequences
    removed: bool = False  # unregistered; weights go once in_use reaches 0
    chat_template: str | None = None  # the template it was trained with, when saved beside it


def saved_chat_template(p: Path) -> str | None:
    """The chat template `tunesmith train` saves with an adapter (PITFALLS 8: serve in the format it
    was trained in), from chat_template.jinja or tokenizer_config.json; None when there is none."""
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text(encoding="utf-8")
    try:
        tpl = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, json.JSONDecodeError):
        return None
    return tpl if isinstance(tpl, str) else None


def check_adapter_dir(path: str | Path, allowed: list[Path], what: str = "lora_path") -> Path:
    """The resolved adapter directory, or an error naming what is wrong and the fix."""
    p = Path(path).expanduser().resolve()
    if allowed and not any(p == root or root in p.parents for root in allowed):
        raise APIError(400, f"`{what}` {path} is outside the allowed adapter directories "
                       f"({', '.join(map(str, allowed))}); start the server with --allowed-adapter-dir")
    cfg_file = p / "adapter_config.json"
    if not cfg_file.is_file():
        raise APIError(400, f"`{what}` {path} is not a PEFT adapter directory (no adapter_config.json inside)")
    if not (p / "adapter_model.safetensors").is_file():
        raise APIError(400, f"`{what}` {path} has no adapter_model.safetensors (tunesmith reads safetensors only)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise APIError(400, f"`{what}` {cfg_file}: cannot read JSON ({e})") from None
    spec = spec_of_peft(str(cfg.get("peft_type")), bool(cfg.get("use_dora")))
    # Mixed batches (`adapter_names=` per row) exist in PEFT for plain LoRA only (adapters/registry.py).
    if spec is None or not spec.per_row_serving:
        shown = "DoRA" if cfg.get("use_dora") else cfg.get("peft_type")
        raise APIError(400, f"`{what}` {path} is a {shown} adapter; the server batches LoRA adapters only. "
                       "Merge it into the base with `tunesmith merge` and serve the merged model")
    quant = (read_sidecar(p).get("base_quantization") or "none")
    if quant != "none":  # served on the full-precision base it was not trained on: close, not equal (PITFALLS 15)
        say(f"serve: {path} was trained on a {quant} base and is served on the unquantized one; its answers can differ "
            "slightly from training's (`tunesmith merge` folds it into the dequantized base exactly)")
    return p


class AdapterPool:
    def __init__(self, max_loaded: int, allowed: list[Path]):
        if max_loaded < 1:
            raise UserError("--max-adapters must be at least 1")
        self.max_loaded = max_loaded
        self.allowed = [Path(a).expanduser().resolve() for a in allowed]
        self.by_name: dict[str, Adapter] = {}
        self.lock = threading.Lock()  # guards by_name between the HTTP and engine threads
        self._clock = itertools.count(1)
        self._ids = itertools.count()
        self.model = None  # the PeftModel once the first adapter is loaded (set by the engine)

    # --- called from the HTTP side ----------------------------------------------------------------

    def names(self) -> list[str]:
        with self.lock:
            return [a.name for a in self.by_name.values() if not a.removed]

    def lookup(self, name: str) -> Adapter:
        with self.lock:
            a = self.by_name.get(name)
            if a is None or a.removed:
                raise APIError(404, f"The model `{name}` does not exist.", code="model_not_found", param="model")
            return a

    def register(self, name: str, path: str | Path, trusted: bool = False) -> Adapter:
        """Add an adapter clients may name; `trusted` (given on the command line) skips the allowed-directory check."""
        p = check_adapter_dir(path, [] if trusted else self.allowed)
        with self.lock:
            if name in self.by_name and not self.by_name[name].removed:
                raise APIError(400, f"The lora adapter `{name}` has already been loaded.", param="lora_name")
            a = Adapter(name, p, chat_template=saved_chat_template(p))
            self.by_name[name] = a
            return a

    def unregister(self, name: str) -> Adapter:
        with self.lock:
            a = self.by_name.get(name)
            if a is None or a.removed:
                raise APIError(404, f"The lora adapter `{name}` cannot be found.", code="model_not_found", param="lora_name")
            a.removed = True
            del self.by_name[name]
            return a

    # --- called from the engine thread only ---------------------------------------------------------
    # (register/unregister above also run there, as engine commands, so `drop` below never races a step)

    def acquire(self, a: Adapter) -> None:
        """A sequence that uses `a` joins the batch: `a` cannot be evicted until it is released."""
        with self.lock:
            a.in_use += 1

    def release(self, a: Adapter) -> None:
        with self.lock:
            a.in_use -= 1
        if a.removed and a.in_use == 0:
            self.drop(a)

    def ensure_loaded(self, base_model, a: Adapter):
        """Load `a` if it is not in memory (evicting an idle one when full); return the model to run.
        Returns None when every loaded adapter is busy, so the caller retries after a step."""
        a.last_used = next(self._clock)
        if a.peft_name is not None:
            return self.model
        loaded = [x for x in self._loaded() if x is not a]
        if len(loaded) >= self.max_loaded:
            idle = [x for x in loaded if x.in_use == 0]
            if not idle:
                return None
            self.drop(min(idle, key=lambda x: x.last_used))
        self._load(base_model, a)
        return self.model

    def drop(self, a: Adapter) -> None:
        if a.peft_name is None or self.model is None:
            return
        if list(self.model.peft_config) == [a.peft_name]:
            # PEFT cannot run a PeftModel with no adapter left: take the LoRA layers out again
            self.model.unload()
            self.model = None
        else:
            self.model.delete_adapter(a.peft_name)
            if self.model.active_adapter not in self.model.peft_config:
                # PeftModel keeps naming the deleted adapter as active and fails its next forward on it
                self.model.active_adapter = next(iter(self.model.peft_config))
        a.peft_name = None

    def _loaded(self) -> list[Adapter]:
        seen = {id(a): a for a in self.by_name.values()}
        return [a for a in seen.values() if a.peft_name is not None]

    def _load(self, base_model, a: Adapter) -> None:
        from peft import PeftModel

        peft_name = f"a{next(self._ids)}"
        try:
            if self.model is None:
                self.model = PeftModel.from_pretrained(base_model, str(a.path), adapter_name=peft_name, is_trainable=False)
                self.model.eval()
            else:
                self.model.load_adapter(str(a.path), adapter_name=peft_name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError) as e:
            # e.g. trained on another base: the tensor shapes do not fit this model
            raise APIError(400, f"cannot load adapter `{a.name}` from {a.path} onto this base model: {e}") from None
        a.peft_name = peft_name
