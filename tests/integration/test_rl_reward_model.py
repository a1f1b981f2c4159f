"""Online RL with what a user brings: few-shot prompts as message lists, and PPO scored by a reward
model trained with `method: reward` (the path of issue 13's HH-RLHF run, on the tiny model)."""

import json

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.objectives.rl.data import read_prompts
from tunesmith.score import score
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration

COMMON = ["model.dtype=fp32", "train.precision=fp32", "train.progress=false", "train.save_every=0",
          "train.warmup_steps=0", "train.scheduler=constant"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_a_prompt_may_be_a_few_shot_conversation(tiny_dir, tok, tmp_path):
    """A `prompt` message list ends in the user turn to answer; worked examples may come before it.
    (It was refused as 'ends with a user turn': the messages format wants a reply to train on.)"""
    shot = [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "#### 7"},
            {"role": "user", "content": "What is 5 + 6?"}]
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": shot, "answer": "11"}) + "\n" + json.dumps({"prompt": shot[:2]}) + "\n")
    cfg = load_config(None, [f"model.path={tiny_dir}", f"data.train={f}", "method=grpo", "data.on_error=skip"])
    rows, dropped, _ = read_prompts(cfg, tok)
    assert len(rows) == 1 and rows[0].messages == shot and rows[0].columns == {"answer": "11"}
    text = tok.decode(rows[0].ids)
    assert "#### 7" in text and text.rstrip().endswith("assistant")  # the example is in the prompt, the reply is due
    assert sum(dropped.values()) == 1  # the row ending in an assistant turn has nothing to answer


@pytest.fixture(scope="module")
def reward_run(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("rm")
    pairs = d / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Say something {i}.", "chosen": "blue blue", "rejected": "red"}) + "\n"
                             for i in range(16)))
    train(None, [f"model.path={tiny_dir}", f"data.train={pairs}", "method=reward", "adapter.type=lora", "train.lr=1e-3",
                 "train.max_steps=4", "train.micro_batch_size=4", f"output_dir={d / 'rm'}", *COMMON])
    return d / "rm"


def test_ppo_scores_completions_with_a_reward_model(tiny_dir, reward_run, tmp_path):
    """The reward of each sampled completion is the reward model's score of (prompt, completion),
    exactly what `tunesmith score` gives the same row. (The reward-model reward crashed on its first
    call before: it handed the completion text where a message list was expected.)"""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something {i}."}) + "\n" for i in range(8)))
    out = tmp_path / "ppo"
    train(None, [f"model.path={tiny_dir}", f"data.train={prompts}", "method=ppo", "adapter.type=lora",
                 f"rl.rewards=[{{reward_model: {reward_run}}}]", "rl.num_generations=2", "rl.max_new_tokens=5",
                 "rl.beta=0.05", "rl.samples_every=1", "train.micro_batch_size=2", "train.max_steps=2", "train.lr=1e-3",
                 f"output_dir={out}", *COMMON])
    rec = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rec] == [1, 2] and all(f"rewards/reward_model:{reward_run.name}" in r for r in rec)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": s["prompt"], "response": s["completion"]}) + "\n" for s in samples))
    scored = [r["score"] for r in score(reward_run, rows)["results"]]
    assert [s["reward"] for s in samples] == pytest.approx(scored, abs=1e-4)
    assert len({round(x, 4) for x in scored}) > 1  # the scores depend on the completion


def test_score_reports_the_reward_models_length_bias(reward_run, tmp_path):
    """`tunesmith score` on pairs says how the scores follow length: the fixture's chosen "blue blue"
    is always the longer response and the model learned to prefer it, so it scores the longer response
    higher in every pair and the slope (score per token) is positive."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Say something {i}.", "chosen": "blue blue", "rejected": "red"}) + "\n"
                             for i in range(6)))
    res = score(reward_run, pairs)
    lb = res["length_bias"]
    assert res["accuracy"] == 1.0 and lb["pairs"] == 6 and lb["prefers_longer"] == 1.0 and lb["slope"] > 0
    gaps = [(r["chosen_score"] - r["rejected_score"]) for r in res["results"]]
    dl = len(tok_ids(reward_run, "blue blue")) - len(tok_ids(reward_run, "red"))
    assert lb["slope"] == pytest.approx(sum(g * dl for g in gaps) / (len(gaps) * dl * dl), rel=1e-6)


def tok_ids(run, text):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run / "adapter")(text, add_special_tokens=False)["input_ids"]


def test_debias_length_subtracts_the_fitted_slope_per_response_token(reward_run, tmp_path):
    """`{reward_model: RUN, debias_length: true}`: the slope is fitted on the reward run's own
    data.train (what `tunesmith score` reports for it) and slope x response tokens comes off each
    score; a pairs file may be given instead; a missing file is a config error naming the key."""
    from tunesmith.errors import ConfigError
    from tunesmith.objectives.rl.rewards import RewardModelReward

    raw, fixed = RewardModelReward(str(reward_run), "cpu"), RewardModelReward(str(reward_run), "cpu", True)
    train_pairs = reward_run.parent / "pairs.jsonl"
    assert fixed.slope == pytest.approx(score(reward_run, train_pairs)["length_bias"]["slope"], rel=1e-5)
    assert fixed.slope > 0 and fixed.__name__ == f"reward_model:{reward_run.name}:debiased"
    prompts, comps = ["Say something 1.", "Say something 2."], ["red", "blue blue blue blue"]
    off = [(r - f) / fixed.slope for r, f in zip(raw(prompts, comps), fixed(prompts, comps))]  # response tokens
    n = [len(tok_ids(reward_run, c)) for c in comps]
    assert off[1] - off[0] == pytest.approx(n[1] - n[0], abs=1e-3)  # the template's closing tokens are common
    assert abs(off[0] - round(off[0])) < 1e-3 and 0 <= round(off[0]) - n[0] <= 3
    assert RewardModelReward(str(reward_run), "cpu", str(train_pairs)).slope == pytest.approx(fixed.slope, rel=1e-6)
    with pytest.raises(ConfigError, match="debias_length"):
        RewardModelReward(str(reward_run), "cpu", str(tmp_path / "nope.jsonl"))
