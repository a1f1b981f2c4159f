"""The run config: one YAML file validated by pydantic, plus dotted overrides from the command line.

`load_config("cfg.yaml", ["train.lr=1e-4"])` returns a validated `RunConfig` or raises `ConfigError`
whose message names the key, what was wrong and the fix. Validation happens before anything heavy
(no weights are loaded until the whole config is known to be good). Validators never rewrite what
the user wrote; derived values are methods (`RunConfig.compute_precision()`, `.storage_dtype()`,
`.prompt_length()`, `.resolved()`).

One module per stage: model, data, adapter, train, preference (reward/dpo/kto), prepare, evaluate
(eval + judge), run (all sections together and the checks across them), loading (YAML + overrides).
"""

from .adapter import (AdapterConfig, BottleneckOptions, IA3Options, PrefixOptions, PromptOptions, PTuningOptions,
                      _ADAPTER_OPTIONS)
from .base import Dtype, Section, _Section, bf16_available
from .data import DataConfig
from .evaluate import EvalConfig, JudgeConfig
from .loading import _describe, _merge, load_config, merge_dicts, parse_overrides, read_yaml, validate_config
from .model import ModelConfig
from .preference import PreferenceConfig
from .prepare import (PrepareConfig, PrepareContaminationConfig, PrepareDedupConfig, PrepareFiltersConfig,
                      PrepareNormalizeConfig, PreparePIIConfig)
from .rl import RLConfig
from .run import PREFERENCE_METHODS, RunConfig
from .train import TrainConfig

__all__ = [
    "AdapterConfig", "BottleneckOptions", "DataConfig", "Dtype", "EvalConfig", "IA3Options", "JudgeConfig", "ModelConfig",
    "PREFERENCE_METHODS", "PTuningOptions", "PreferenceConfig", "PrefixOptions", "PrepareConfig",
    "PrepareContaminationConfig", "PrepareDedupConfig", "PrepareFiltersConfig", "PrepareNormalizeConfig",
    "PreparePIIConfig", "PromptOptions", "RLConfig", "RunConfig", "Section", "TrainConfig", "bf16_available", "load_config",
    "merge_dicts", "parse_overrides", "read_yaml", "validate_config", "_ADAPTER_OPTIONS", "_Section", "_describe", "_merge",
]
