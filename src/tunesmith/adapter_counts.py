"""Moved to `tunesmith.adapters` (counts.py, one function per type); this name stays importable."""

from .adapters import closed_form_trainable  # noqa: F401
