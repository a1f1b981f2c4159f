"""Errors meant for people: what was wrong, where, and what to do.

The CLI prints a `UserError` as one clear message (no traceback) and exits 2; any other exception
is our bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (config, data, paths): stop early and say how to fix it."""


class ConfigError(UserError):
    """A config key has a wrong name, type or value."""


class DataError(UserError):
    """A data file or row is malformed; the message names file:line and what was expected."""


class TrainingError(UserError):
    """The run cannot go on (NaN loss, nothing trainable, ...); the message says why."""
