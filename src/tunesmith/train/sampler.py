"""Which rows each process gets at each optimizer step, as a pure function of (seed, step).

Because the data position follows from the step number alone, resuming needs no saved iterator
state, and a run on 1 process and on N processes with the same global batch see exactly the same
rows in each step (only split differently), which is what makes their losses equal.
"""

from __future__ import annotations

import math

import torch


class StepSampler:
    def __init__(self, n_rows: int, micro_batch_size: int, grad_accum_steps: int, world_size: int = 1, rank: int = 0, seed: int = 0):
        self.n_rows = n_rows
        self.micro = micro_batch_size
        self.accum = grad_accum_steps
        self.world = world_size
        self.rank = rank
        self.seed = seed
        self.global_batch = micro_batch_size * grad_accum_steps * world_size
        self.steps_per_epoch = n_rows // self.global_batch
        self._perm: tuple[int, list[int]] | None = None

    def total_steps(self, epochs: float, max_steps: int) -> int:
        return max_steps if max_steps > 0 else max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n_rows, generator=g).tolist())
        return self._perm[1]

    def micro_batches(self, step: int) -> list[list[int]]:
        """Row indices of this process's `grad_accum_steps` micro-batches for optimizer step `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        rows = self._permutation(epoch)[k * self.global_batch : (k + 1) * self.global_batch]
        per_rank = self.micro * self.accum
        mine = rows[self.rank * per_rank : (self.rank + 1) * per_rank]
        return [mine[m * self.micro : (m + 1) * self.micro] for m in range(self.accum)]
