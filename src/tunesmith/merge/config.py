"""The merge.yaml schema (`tunesmith merge --config merge.yaml --out DIR`), validated like config.py.

```yaml
method: ties                 # linear | slerp | task_arithmetic | ties | dare_linear | dare_ties
base_model: runs/base/model  # needed by task_arithmetic, ties, dare_*
models:
  - path: runs/math/merged
    weight: 1.0
  - path: runs/code/merged
    weight:                  # per-tensor: first matching glob wins; the last rule is the default
      - {match: "*.mlp.*", value: 0.8}
      - {value: 0.3}
parameters: {density: 0.5, normalize: true, scale: 1.0, seed: 0}
```
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, model_validator

from ..config import Section as _Section  # public name; the classes below keep the short alias
from .methods import MERGE_METHODS, NEEDS_BASE


class TensorRule(_Section):
    match: str = Field("*", description="Glob over tensor names, e.g. `*.self_attn.*`; `*` (the default) matches all.")
    value: float = Field(description="The value for the tensors this rule matches.")


TensorValue = float | list[TensorRule]


def resolve(value: TensorValue, name: str) -> float:
    """The value of a per-tensor setting for tensor `name` (first matching rule)."""
    if not isinstance(value, list):
        return float(value)
    for rule in value:
        if fnmatch.fnmatchcase(name, rule.match):
            return rule.value
    raise AssertionError(f"no rule matched {name}; validation guarantees a default rule")


def _check_rules(value: TensorValue | None, key: str) -> None:
    if isinstance(value, list) and not any(r.match == "*" for r in value):
        raise ValueError(f"`{key}` has per-tensor rules but no default; add a last rule `{{value: X}}` that matches all")


class MergeModel(_Section):
    path: str = Field(description="Model directory (safetensors), same architecture as the others.")
    weight: TensorValue = Field(1.0, description="Weight of this model, or per-tensor rules.")
    density: TensorValue | None = Field(None, description="TIES/DARE: fraction of this model's task vector kept; "
                                                          "default `parameters.density`.")


class MergeParameters(_Section):
    density: TensorValue = Field(1.0, description="TIES/DARE: fraction of each task vector kept (0, 1].")
    t: TensorValue = Field(0.5, description="SLERP: 0 = first model, 1 = second model.")
    normalize: bool = Field(True, description="linear/TIES/DARE-TIES: divide by the sum of the weights.")
    scale: float = Field(1.0, description="task_arithmetic/TIES/DARE: lambda, the factor on the merged task vector.")
    seed: int = Field(0, description="DARE: seed of the random drop.")


class MergeConfig(_Section):
    method: Literal["linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
    models: list[MergeModel] = Field(description="The models to merge (SLERP: exactly two).")
    base_model: str | None = Field(None, description="The common ancestor; required by task vector methods.")
    parameters: MergeParameters = MergeParameters()
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="Saved dtype; auto = the first model's.")
    tokenizer_from: Literal["base", "first"] = Field(
        "base", description="Copy tokenizer and chat template from the base model (or the first model when there is no base).")

    @model_validator(mode="after")
    def _check(self):
        assert set(MERGE_METHODS) >= {self.method}
        if not self.models:
            raise ValueError("`models` is empty; list at least one model to merge")
        if self.method in NEEDS_BASE and not self.base_model:
            raise ValueError(f"`method: {self.method}` merges task vectors (model - base); set `base_model`")
        if self.method == "slerp" and len(self.models) != 2:
            raise ValueError(f"`method: slerp` interpolates exactly 2 models; `models` has {len(self.models)}")
        _check_rules(self.parameters.density, "parameters.density")
        _check_rules(self.parameters.t, "parameters.t")
        for i, m in enumerate(self.models):
            _check_rules(m.weight, f"models.{i}.weight")
            _check_rules(m.density, f"models.{i}.density")
        return self
