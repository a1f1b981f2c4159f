"""Train/eval split stratified by source, and mixing sources by weight.

Both work on row indices per source (the rows themselves stay on disk), so they cost a few
integers a row. The split holds out `eval_fraction` of every source (at least one row of a source
with two or more), so the eval set has each source in its train share. Mixing then downsamples the
train split so each source's share of it equals its weight: the total is the largest one the
sources can fill without repeating a row (e.g. 80% domain + 20% general, the usual guard against
forgetting). Both are seeded; the chosen rows keep their input order.
"""

from __future__ import annotations

import random


def split_indices(counts: list[int], eval_fraction: float, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per source: (train indices, eval indices), each sorted."""
    train, evals = [], []
    for s, n in enumerate(counts):
        idx = list(range(n))
        random.Random(f"{seed}:split:{s}").shuffle(idx)
        k = round(n * eval_fraction) if eval_fraction > 0 else 0
        if eval_fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        evals.append(sorted(idx[:k]))
        train.append(sorted(idx[k:]))
    return train, evals


def mix_counts(available: list[int], weights: list[float]) -> list[int]:
    """Rows to take from each source so shares match `weights`, as many as possible, none repeated.

    available [1000, 1000], weights [0.8, 0.2]: the first source limits the total to 1000/0.8 = 1250,
    so take [1000, 250].
    """
    total_w = sum(weights)
    shares = [w / total_w for w in weights]
    limit = min(n / s for n, s in zip(available, shares) if s > 0)
    return [min(n, int(round(limit * s))) for n, s in zip(available, shares)]


def mix_indices(train: list[list[int]], weights: list[float], seed: int) -> list[list[int]]:
    take = mix_counts([len(t) for t in train], weights)
    out = []
    for s, (rows, k) in enumerate(zip(train, take)):
        picked = list(rows)
        random.Random(f"{seed}:mix:{s}").shuffle(picked)
        out.append(sorted(picked[:k]))
    return out
