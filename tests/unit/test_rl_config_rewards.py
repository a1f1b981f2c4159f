"""The `rl:` config section (refusals name the key) and the reward functions."""

import pytest

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.objectives.rl.rewards import build_rewards, gsm8k_reward, score_all

BASE = ["model.path=m", "data.train=d.jsonl"]


def cfg(*extra):
    return load_config(None, BASE + list(extra))


def test_grpo_config_and_defaults():
    c = cfg("method=grpo", "rl.num_generations=4", "rl.rewards=[gsm8k, regex]", "rl.reward_weights=[1, 0.5]")
    assert c.rl.weights() == [1, 0.5] and c.rl.clip_high() == c.rl.epsilon
    assert cfg("method=grpo", "rl.epsilon_high=0.28").rl.clip_high() == 0.28


@pytest.mark.parametrize("extra, key", [
    (["method=sft", "rl.beta=0.1"], "rl.beta"),
    (["method=grpo", "rl.reward_weights=[1, 2]"], "reward_weights"),
    (["method=grpo", "rl.num_generations=1"], "num_generations"),
    (["method=grpo", "data.eval_fraction=0.1"], "data.eval"),
    (["method=grpo", "train.save_every=3", "rl.num_iterations=2"], "train.save_every"),
    (["method=grpo", "rl.kl_target=6"], "rl.kl_target"),
    (["method=grpo", "rl.loss_type=sum"], "rl.loss_type"),
    (["method=grpo", "rl.rewardz=[x]"], "rl.rewardz"),
    (["method=grpo", "rl.rewards=[{model: x}]"], "reward_model"),
    (["method=rloo", "data.packing=true"], "data.packing"),
    (["method=ppo", "rl.rewards=[{reward_model: x, debias: true}]"], "debias_length"),
    (["method=ppo", "rl.rewards=[{reward_model: x, debias_length: 3}]"], "debias_length"),
])
def test_refusals_name_the_key(extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg(*extra)


def test_builtin_rewards():
    c = cfg("method=grpo", "rl.rewards=[gsm8k, regex, length, json_schema]", "rl.regex='#+ 1'", "rl.target_length=4",
            "rl.json_schema={type: object, required: [a]}")
    fns = build_rewards(c.rl, "cpu")
    comps = ["so #### 12", "{\"a\": 1}", "13"]
    total, per = score_all(fns, c.rl.weights(), ["p"] * 3, comps, {"answer": ["x #### 12", "3", "13.0"]})
    assert per["gsm8k"] == [1.0, 0.0, 1.0]
    assert per["regex"] == [1.0, 0.0, 0.0]
    assert per["length"] == [max(-1, 1 - 6 / 4), 1 - 4 / 4, 1 - 2 / 4]  # 10, 8 and 2 characters
    assert per["json_schema"] == [0.0, 1.0, 0.0]
    assert total == [sum(v[i] for v in per.values()) for i in range(3)]
    with pytest.raises(ConfigError, match="answer"):
        gsm8k_reward(["p"], ["1"])


def test_user_reward_function_from_a_file(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def short(prompts, completions, answer, **kw):\n"
                                            "    return [float(len(c) < 3 and a == 'y') for c, a in zip(completions, answer)]\n"
                                            "def bad(prompts, completions, **kw):\n    return [1.0]\n")
    monkeypatch.chdir(tmp_path)
    c = cfg("method=grpo", "rl.rewards=[my_rewards.py:short, 'my_rewards:bad']")
    (short, fn), (bad, fn_bad) = build_rewards(c.rl, "cpu")
    assert short == "short" and fn(["p", "p"], ["ab", "abc"], answer=["y", "y"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="returned 1 values for 2"):
        score_all([(bad, fn_bad)], [1.0], ["p", "p"], ["a", "b"], {})
    for spec, msg in (("nope_mod:f", "cannot import"), ("my_rewards:missing", "no function"), ("bogus", "unknown reward")):
        with pytest.raises(ConfigError, match=msg):
            build_rewards(cfg("method=grpo", f"rl.rewards=['{spec}']").rl, "cpu")


def test_length_bias_by_hand():
    """(score gap, token gap) per pair: pairs of equal length are left out; the slope is through the
    origin, sum(ds * dl) / sum(dl^2)."""
    from tunesmith.score import length_bias

    b = length_bias([(1.0, 2), (-0.5, -1), (0.3, 0), (-0.2, 3)])
    assert b["pairs"] == 3 and b["prefers_longer"] == pytest.approx(2 / 3)
    assert b["slope"] == pytest.approx((2.0 + 0.5 - 0.6) / (4 + 1 + 9))
    ds, dl = [1.0, -0.5, -0.2], [2.0, -1.0, 3.0]
    mx, my = sum(ds) / 3, sum(dl) / 3
    r = sum((a - mx) * (c - my) for a, c in zip(ds, dl)) / (sum((a - mx) ** 2 for a in ds) * sum((c - my) ** 2 for c in dl)) ** 0.5
    assert b["corr"] == pytest.approx(r)
    assert length_bias([(1.0, 0), (0.5, 2)]) is None  # one pair of unequal length: nothing to fit


def test_a_reward_model_spec_may_ask_for_length_debiasing():
    c = cfg("method=ppo", "rl.rewards=[{reward_model: runs/rm, debias_length: true}, {reward_model: runs/rm2, debias_length: p.jsonl}]")
    assert c.rl.rewards == [{"reward_model": "runs/rm", "debias_length": True}, {"reward_model": "runs/rm2", "debias_length": "p.jsonl"}]
