"""GRPO / RLOO through `train` on the tiny model: it learns a verifiable task, accumulation equals
one big micro-batch, and kill + resume gives the uninterrupted run's steps exactly.

The task: a short SFT warm-up teaches "Name a color." -> one of red / blue / green / gold, chosen
at random (so the policy samples each about a quarter of the time); the RL reward is the built-in
`regex` reward for "blue", set from the config alone. What the test shows: online RL moves a policy
that rarely earns the reward (< 0.3) to one that almost always does (> 0.8), through generation,
scoring, group advantages and the clipped loss on the one training loop. It does not show that the
tiny model can reason; the SmolLM2 arithmetic run is for that.
"""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration

COMMON = ["model.dtype=fp32", "train.precision=fp32", "train.progress=false", "train.save_every=0"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's matmuls are too small for two threads; on a shared machine they spin (100x slower).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def warm(tiny_dir, tmp_path_factory):
    """(SFT-warmed model dir, prompts file)."""
    d = tmp_path_factory.mktemp("rl")
    rng = random.Random(0)
    sft = d / "sft.jsonl"
    sft.write_text("".join(json.dumps({"instruction": "Name a color.", "output": rng.choice(["red", "blue", "green", "gold"])}) + "\n"
                           for _ in range(256)))
    train(None, [f"model.path={tiny_dir}", f"data.train={sft}", "data.format=alpaca", "adapter.type=none", "train.lr=3e-3",
                 "train.max_steps=60", "train.micro_batch_size=16", "train.warmup_steps=5", f"output_dir={d / 'sft'}", *COMMON])
    prompts = d / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "Name a color.", "answer": "blue"}) + "\n" for _ in range(64)))
    return d / "sft" / "model", prompts


def _rl(warm, out, *extra, steps=60):
    model, prompts = warm
    return train(None, [f"model.path={model}", f"data.train={prompts}", "rl.rewards=[regex]", "rl.regex=blue",
                        "rl.num_generations=8", "rl.max_new_tokens=6", "adapter.type=none", "train.lr=1e-3",
                        f"train.max_steps={steps}", "train.micro_batch_size=2", "train.warmup_steps=0",
                        "train.scheduler=constant", f"output_dir={out}", *COMMON, *extra])


PPO = ["rl.beta=0.02", "rl.num_generations=4", "train.micro_batch_size=4"]


@pytest.mark.parametrize("method, extra", [("grpo", []), ("rloo", []), ("ppo", PPO)])
def test_reward_rises(warm, tmp_path, method, extra):
    s = _rl(warm, tmp_path / method, f"method={method}", "rl.samples_every=20", *extra)
    rec = read_metrics(tmp_path / method / "metrics.jsonl")
    first = sum(r["reward"] for r in rec[:5]) / 5
    last = sum(r["reward"] for r in rec[-5:]) / 5
    assert first < 0.3 and last > 0.8, (first, last)
    assert all(k in rec[0] for k in ("reward_std", "rewards/regex", "entropy", "clip_fraction", "completion_length",
                                     "truncated_fraction", "zero_std_fraction"))
    samples = [json.loads(x) for x in (tmp_path / method / "samples.jsonl").read_text().splitlines()]
    assert sorted({x["step"] for x in samples}) == [1, 21, 41]
    assert all(("blue" in x["completion"]) == (x["reward"] == 1.0) for x in samples)
    report = (tmp_path / method / "report.md").read_text()
    assert f"Online RL ({method})" in report and (tmp_path / method / "rl.png").is_file()
    assert s["steps"] == 60


def _weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


def test_accumulation_equals_one_micro_batch(warm, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    _rl(warm, a, "method=grpo", "train.micro_batch_size=2", "train.grad_accum_steps=1", steps=3)
    _rl(warm, b, "method=grpo", "train.micro_batch_size=1", "train.grad_accum_steps=2", steps=3)
    ra, rb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["reward"] for r in ra] == [r["reward"] for r in rb]
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], abs=1e-6)
    assert [r["grad_norm"] for r in ra] == pytest.approx([r["grad_norm"] for r in rb], rel=1e-6)
    # 2e-6 measured after 3 AdamW steps: fp32 rounding of the two micro-batch sums, which AdamW's
    # normalisation magnifies where a gradient is ~0; a wrong normaliser moves weights by ~lr (1e-3)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


@pytest.mark.parametrize("extra", [["method=grpo", "rl.num_iterations=2"],
                                   ["method=ppo", "rl.ppo_epochs=2", "rl.beta=0.05", "rl.kl_target=0.01", "rl.kl_horizon=10"]])
def test_kill_and_resume_is_exact(warm, tmp_path, extra):
    """A reused generation batch (num_iterations / ppo_epochs 2) and PPO's adaptive KL coefficient,
    which lives in the objective and comes back through its state hook."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    extra = [*extra, "train.save_every=2"]
    _rl(warm, full, *extra, steps=4)
    _rl(warm, cut, *extra, steps=2)  # "killed" after the checkpoint at step 2
    train(None, [f"model.path={warm[0]}", f"data.train={warm[1]}", "rl.rewards=[regex]", "rl.regex=blue",
                 "rl.num_generations=8", "rl.max_new_tokens=6", "adapter.type=none", "train.lr=1e-3", "train.max_steps=4",
                 "train.micro_batch_size=2", "train.warmup_steps=0", "train.scheduler=constant", f"output_dir={cut}",
                 *COMMON[:3], *extra], resume=True)
    rf, rc = read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert [r["step"] for r in rc] == [1, 2, 3, 4]
    for key in ("loss", "reward", "kl", "entropy", "clip_fraction", "beta", "value_loss"):
        assert [r.get(key) for r in rf] == [r.get(key) for r in rc], key
    assert rf[3]["clip_fraction"] >= 0  # step 4 reuses step 3's generations (num_iterations 2)
    if "method=ppo" in extra:  # kl_sequence: the controller's unit (nats per completion), kl is per token
        for r in rf:
            assert r["kl_sequence"] == pytest.approx(r["kl"] * r["completion_length"], rel=1e-5, abs=1e-7)
        kl1 = rf[0]["kl_sequence"]  # step 1: the training forward is the rollout's policy, 16 completions
        assert rf[0]["beta"] == pytest.approx(0.05 * (1 + max(-0.2, min(0.2, kl1 / 0.01 - 1)) * 16 / 10), rel=1e-4)
    wf, wc = _weights(full), _weights(cut)
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


def test_ppo_value_head_is_saved_with_the_result_and_continued_from_it(warm, tmp_path):
    """The trained critic is part of PPO's result (value_head.safetensors beside the model, not inside
    its weights), and PPO started from that result (model.path: RUN/model) begins with it; --resume
    restores it from the checkpoint (test_kill_and_resume_is_exact compares value_loss)."""
    from shutil import copytree

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from tunesmith.config import load_config
    from tunesmith.errors import ConfigError
    from tunesmith.objectives import get_objective

    run = tmp_path / "ppo"
    _rl(warm, run, "method=ppo", *PPO, "train.save_every=2", steps=2)
    head = load_file(str(run / "model" / "value_head.safetensors"))
    ckpt = load_file(str(run / "checkpoints" / "step-2" / "trainable.safetensors"))
    assert set(head) == {"weight", "bias"} and head["weight"].abs().sum() > 0  # trained: it starts at zero
    assert torch.equal(head["weight"], ckpt["value_head.weight"]) and torch.equal(head["bias"], ckpt["value_head.bias"])
    assert not any(k.startswith("value_head") for k in _weights(run))

    def wrapped(model_dir):
        cfg = load_config(None, [f"model.path={model_dir}", f"data.train={warm[1]}", "method=ppo", "rl.rewards=[regex]",
                                 "adapter.type=none"])
        return get_objective("ppo", cfg).wrap(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))

    assert torch.equal(wrapped(run / "model").value_head.weight.detach(), head["weight"])
    assert wrapped(warm[0]).value_head.weight.abs().sum() == 0  # a plain model: a fresh critic
    other = copytree(run / "model", tmp_path / "other")
    save_file({"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}, str(other / "value_head.safetensors"))
    with pytest.raises(ConfigError, match="value_head.safetensors does not fit"):
        wrapped(other)


def test_ppo_raises_a_reward_models_score_with_bounded_kl(warm, tiny_dir, tmp_path):
    """Issue 13 6c at tiny scale: a `method: reward` model trained to prefer "blue" to the other
    colours, then PPO (LoRA policy on the warmed model) scored by it alone: the reward-model score
    rises, and the KL penalty holds the policy nearer the base (adapter disabled): the KL over the
    last 10 steps at beta 2 is below that of the same run at beta 0. (At beta 0.5 the two KLs were
    within 15 % of each other, and a 1e-5 change in the reward model's fp32 rounding, from the packed-row
    attention path, flipped them: 1.65 < 1.94 before, 2.15 > 1.87 after; at beta 2: 0.36 / 0.35 vs
    1.94 / 1.87, and the reward still rises by 1.25 / 1.32.)"""
    pairs = tmp_path / "pairs.jsonl"
    rng = random.Random(1)
    pairs.write_text("".join(json.dumps({"prompt": "Name a color.", "chosen": "blue",
                                         "rejected": rng.choice(["red", "green", "gold"])}) + "\n" for _ in range(64)))
    train(None, [f"model.path={tiny_dir}", f"data.train={pairs}", "method=reward", "adapter.type=lora", "train.lr=3e-3",
                 "train.max_steps=30", "train.micro_batch_size=8", "train.warmup_steps=0", f"output_dir={tmp_path / 'rm'}",
                 *COMMON])

    def ppo(beta):
        out = tmp_path / f"ppo-{beta}"
        train(None, [f"model.path={warm[0]}", f"data.train={warm[1]}", "method=ppo", "adapter.type=lora", "adapter.r=8",
                     f"rl.rewards=[{{reward_model: {tmp_path / 'rm'}}}]", "rl.num_generations=4", "rl.max_new_tokens=6",
                     f"rl.beta={beta}", "rl.kl_every=1", "train.lr=1e-3", "train.max_steps=40", "train.micro_batch_size=4",
                     "train.warmup_steps=0", "train.scheduler=constant", f"output_dir={out}", *COMMON])
        rec = read_metrics(out / "metrics.jsonl")
        mean = lambda key, part: sum(r[key] for r in part) / len(part)  # noqa: E731
        return mean("reward", rec[:5]), mean("reward", rec[-5:]), mean("kl", rec[-10:]), [(round(r["reward"], 2), round(r["kl"], 3)) for r in rec]

    first, last, kl, trace = ppo(2.0)
    assert last > first + 1.0, str(trace)
    free = ppo(0.0)
    assert free[1] > free[0] + 1.0, str(free[3])
    assert kl < free[2], (kl, free[2])
