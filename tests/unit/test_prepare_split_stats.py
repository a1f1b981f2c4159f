"""Split, mix and token statistics of `tunesmith prepare`, against hand-computed values."""

import pytest

from tunesmith.config import PrepareConfig
from tunesmith.data.prepare.split import mix_counts, mix_indices, split_indices
from tunesmith.data.prepare.stats import pad_waste_longest, pad_waste_static, packed_rows, percentile
from tunesmith.errors import ConfigError


def test_split_is_stratified_seeded_and_disjoint():
    train, evals = split_indices([100, 10, 1], 0.1, seed=3)
    assert [len(e) for e in evals] == [10, 1, 0]  # 10% of each source; a single-row source stays in train
    for t, e, n in zip(train, evals, [100, 10, 1]):
        assert sorted(t + e) == list(range(n)) and not set(t) & set(e)
    assert split_indices([100, 10, 1], 0.1, seed=3) == (train, evals)
    assert split_indices([100, 10, 1], 0.1, seed=4)[1][0] != evals[0]


def test_mix_counts_hand_computed():
    """[1000, 1000] at 0.8/0.2: the first source caps the total at 1000/0.8 = 1250 -> [1000, 250].
    [100, 1000] at 0.8/0.2: 100/0.8 = 125 -> [100, 25]. [300, 50] at 0.5/0.5: 50/0.5 = 100 -> [50, 50]."""
    assert mix_counts([1000, 1000], [0.8, 0.2]) == [1000, 250]
    assert mix_counts([100, 1000], [8, 2]) == [100, 25]
    assert mix_counts([300, 50], [1, 1]) == [50, 50]


def test_mix_indices_are_subsets_in_order():
    picked = mix_indices([list(range(1000)), list(range(1000))], [0.8, 0.2], seed=0)
    assert [len(p) for p in picked] == [1000, 250]
    assert picked[1] == sorted(picked[1]) and set(picked[1]) <= set(range(1000))


def test_negative_weights_rejected_with_key():
    with pytest.raises(Exception, match="weights must be >= 0"):
        PrepareConfig(weights=[1.0, -0.5])


def test_percentile_nearest_rank():
    s = list(range(1, 101))  # 1..100
    assert percentile(s, 50) == 51  # index round(0.5 * 99) = 50 (round half to even) -> value 51
    assert percentile(s, 99) == 99 and percentile(s, 100) == 100 and percentile([], 50) == 0


def test_padding_waste_hand_computed():
    """lengths 10, 20, 30, 40 and max_length 64:
    pad to max: 100 / (4*64) = 0.390625 used -> waste 0.609375;
    one batch of 4 padded to 40: 100 / 160 -> waste 0.375;
    packing (best fit decreasing): [40, 20], [30, 10] -> 2 rows, 100 / 128 -> waste 0.21875."""
    lengths = [10, 20, 30, 40]
    assert pad_waste_static(lengths, 64) == pytest.approx(0.609375)
    assert pad_waste_longest(lengths, 4, seed=0, multiple=8) == pytest.approx(0.375)
    assert packed_rows(lengths, 64) == 2
    assert packed_rows([64, 64, 1], 64) == 3
    assert pad_waste_static([10, 100], 64) == pytest.approx(1 - 10 / 64)  # over-length rows left out


def test_config_errors_name_the_key():
    from tunesmith.config import RunConfig, validate_config

    with pytest.raises(ConfigError, match=r"prepare\.dedup\.treshold.*did you mean `prepare\.dedup\.threshold`"):
        validate_config({"model": {"path": "m"}, "prepare": {"dedup": {"treshold": 0.5}}}, RunConfig)
    with pytest.raises(ConfigError, match=r"prepare\.dedup\.threshold"):
        validate_config({"model": {"path": "m"}, "prepare": {"dedup": {"threshold": 1.5}}}, RunConfig)
    with pytest.raises(ConfigError, match=r"prepare\.pii\.action"):
        validate_config({"model": {"path": "m"}, "prepare": {"pii": {"action": "hide"}}}, RunConfig)
