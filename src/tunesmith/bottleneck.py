"""Moved to `tunesmith.adapters.bottleneck`; this name stays importable for older callers."""

from .adapters.bottleneck import *  # noqa: F401,F403
from .adapters.bottleneck import CONFIG_NAME, WEIGHTS_NAME, is_bottleneck_model  # noqa: F401
