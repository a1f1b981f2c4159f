"""Callbacks: how a caller (a test, a notebook, the quickstart) watches a run without patching it.

`train(..., callbacks=[...])` takes `Callback` objects or plain functions `fn(step, record)` (the
latter are `on_step_end`). The loop calls, in order:

    on_train_start(module, optimizer)      once, after the model, optimizer and any resumed
                                           checkpoint are in place, before the first step; `module`
                                           is what the objective's `wrap` returned (unwrapped from
                                           DDP), its `.model` the model `build_model` built
    on_before_optimizer_step(step, module) each step, gradients final (unscaled, clipped)
    on_step_end(step, record)              each step, after logging, with the metrics record
"""

from __future__ import annotations

from typing import Callable

from torch import nn


class Callback:
    def on_train_start(self, module: nn.Module, optimizer) -> None:
        pass

    def on_before_optimizer_step(self, step: int, module: nn.Module) -> None:
        pass

    def on_step_end(self, step: int, record: dict) -> None:
        pass


class StepEnd(Callback):
    """A plain function `fn(step, record)` as a callback."""

    def __init__(self, fn: Callable[[int, dict], None]):
        self.fn = fn

    def on_step_end(self, step: int, record: dict) -> None:
        self.fn(step, record)


def as_callbacks(items: list | None) -> list[Callback]:
    return [c if isinstance(c, Callback) else StepEnd(c) for c in items or []]
