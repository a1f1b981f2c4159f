"""Data preparation (`tunesmith prepare`): one module per concern, run in order by `run.py`."""

from .run import run_prepare

__all__ = ["run_prepare"]
