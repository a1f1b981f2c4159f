"""Model-merging math on toy tensors, each checked against values worked out by hand."""

import math

import pytest
import torch

from tunesmith.errors import ConfigError
from tunesmith.merge.methods import (MERGE_METHODS, MergeParams, dare_drop, linear, slerp, task_arithmetic, ties,
                                     trim_magnitude)

DELTAS = [[3.0, -1.0, 0.1], [1.0, 2.0, -0.2], [-2.0, 1.0, 0.3]]


def test_ties_issue_example():
    """Deltas (rows) [3,-1,0.1], [1,2,-0.2], [-2,1,0.3]; weights 1; density 1; base 0.
    column 0: sum 3+1-2 = 2 > 0, agreeing {3, 1} -> mean 2
    column 1: sum -1+2+1 = 2 > 0, agreeing {2, 1} -> mean 1.5
    column 2: sum 0.1-0.2+0.3 = 0.2 > 0, agreeing {0.1, 0.3} -> mean 0.2   => [2, 1.5, 0.2]"""
    base = torch.zeros(3)
    out = ties([torch.tensor(d) for d in DELTAS], [1, 1, 1], base, MergeParams(density=1.0))
    torch.testing.assert_close(out, torch.tensor([2.0, 1.5, 0.2]))


def test_ties_adds_to_base_and_weights_disjoint_mean():
    """Base 10; weights (2, 1, 1). column 0: weighted 6+1-2 = 5 > 0, agreeing i=0,1:
    (6 + 1) / (2 + 1) = 7/3. column 1: -2+2+1 = 1 > 0, agreeing i=1,2: (2+1)/(1+1) = 1.5.
    column 2: 0.2-0.2+0.3 = 0.3 > 0, agreeing i=0,2: (0.2+0.3)/(2+1) = 1/6. Result = 10 + that."""
    base = torch.full((3,), 10.0)
    models = [base + torch.tensor(d) for d in DELTAS]
    out = ties(models, [2, 1, 1], base, MergeParams(density=1.0))
    torch.testing.assert_close(out, torch.tensor([10 + 7 / 3, 11.5, 10 + 1 / 6]))


def test_ties_trim_by_density():
    """density 1/3 keeps the largest |entry| of each row: [3,0,0], [0,2,0], [-2,0,0].
    column 0: sum 1 > 0, agreeing {3} -> 3; column 1: {2} -> 2; column 2: all zero -> 0."""
    tau = torch.tensor(DELTAS)
    torch.testing.assert_close(trim_magnitude(tau, 1 / 3), torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [-2.0, 0, 0]]))
    out = ties([torch.tensor(d) for d in DELTAS], [1, 1, 1], torch.zeros(3), MergeParams(density=1 / 3))
    torch.testing.assert_close(out, torch.tensor([3.0, 2.0, 0.0]))


def test_linear_soup_normalises_by_weights():
    """(1*[1,2] + 3*[5,6]) / 4 = [16/4, 20/4] = [4, 5]; unnormalised: [16, 20]."""
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([5.0, 6.0])
    torch.testing.assert_close(linear([a, b], [1, 3]), torch.tensor([4.0, 5.0]))
    torch.testing.assert_close(linear([a, b], [1, 3], p=MergeParams(normalize=False)), torch.tensor([16.0, 20.0]))


def test_task_arithmetic():
    """base [1,1]; models [2,1] and [1,3] -> tau [1,0], [0,2]; 1 + 0.5*(1*[1,0] + 2*[0,2]) = [1.5, 3]."""
    base = torch.tensor([1.0, 1.0])
    out = task_arithmetic([torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])], [1, 2], base, MergeParams(scale=0.5))
    torch.testing.assert_close(out, torch.tensor([1.5, 3.0]))


def test_slerp_orthogonal_unit_vectors():
    """v0 = [1,0], v1 = [0,1]: Omega = pi/2, sin Omega = 1; t = 0.5 -> sin(pi/4)(v0 + v1) = [0.7071, 0.7071]
    (the unit-norm midpoint, where linear interpolation gives the shorter [0.5, 0.5])."""
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    s = math.sqrt(0.5)
    torch.testing.assert_close(slerp([v0, v1], p=MergeParams(t=0.5)), torch.tensor([s, s]))
    torch.testing.assert_close(slerp([v0, v1], p=MergeParams(t=0.0)), v0)
    torch.testing.assert_close(slerp([v0, v1], p=MergeParams(t=1.0)), v1)
    # t = 1/3: Omega t = pi/6 -> [sin(pi/3), sin(pi/6)] = [0.8660, 0.5]
    torch.testing.assert_close(slerp([v0, v1], p=MergeParams(t=1 / 3)), torch.tensor([math.sqrt(3) / 2, 0.5]))


def test_slerp_parallel_falls_back_to_lerp_and_needs_two():
    """v1 = 2 v0 (cos = 1): lerp at t = 0.25 gives 0.75*[1,1] + 0.25*[2,2] = [1.25, 1.25]."""
    v0 = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(slerp([v0, 2 * v0], p=MergeParams(t=0.25)), torch.tensor([1.25, 1.25]))
    with pytest.raises(ConfigError, match="exactly 2"):
        slerp([v0, v0, v0])


def test_dare_drop_rescales_and_keeps_expectation():
    """Kept entries are tau / density (1 / 0.25 = 4); dropped are 0; the mean over 40k entries of a
    tensor of ones stays 1 within sampling noise (std of the mean = sqrt(3)/200 ~ 0.009)."""
    g = torch.Generator().manual_seed(0)
    tau = torch.ones(1, 40_000)
    out = dare_drop(tau, 0.25, g)
    assert set(out.unique().tolist()) == {0.0, 4.0}
    assert abs(out.mean().item() - 1.0) < 0.05
    assert abs((out != 0).float().mean().item() - 0.25) < 0.01


def test_dare_ties_with_density_one_equals_ties():
    """With density 1 DARE drops nothing, so dare_ties is TIES and dare_linear is task arithmetic."""
    ms, base = [torch.tensor(d) for d in DELTAS], torch.zeros(3)
    torch.testing.assert_close(MERGE_METHODS["dare_ties"](ms, [1, 1, 1], base, MergeParams()), torch.tensor([2.0, 1.5, 0.2]))
    torch.testing.assert_close(MERGE_METHODS["dare_linear"](ms, [1, 1, 1], base, MergeParams()),
                               torch.tensor([2.0, 2.0, 0.2]))


def test_methods_needing_a_base_say_so():
    with pytest.raises(ConfigError, match="base_model"):
        ties([torch.zeros(2)], [1.0], None, MergeParams())


def test_per_model_density():
    """densities (1/3, 1, 2/3): rows become [3,0,0], [1,2,-0.2], [-2,1,0] (row 2 keeps its 2 largest).
    column 0: sum 2 > 0, agreeing {3, 1} -> 2; column 1: sum 3, agreeing {2, 1} -> 1.5;
    column 2: sum -0.2 < 0, agreeing {-0.2} -> -0.2."""
    out = ties([torch.tensor(d) for d in DELTAS], [1, 1, 1], torch.zeros(3), MergeParams(density=(1 / 3, 1.0, 2 / 3)))
    torch.testing.assert_close(out, torch.tensor([2.0, 1.5, -0.2]))
    kept = dare_drop(torch.ones(2, 10_000), (1.0, 0.5), torch.Generator().manual_seed(0))
    assert bool((kept[0] == 1).all()) and set(kept[1].unique().tolist()) == {0.0, 2.0}
