"""Online RL in the estimate (estimate/rl.py): a step is a rollout (prefill + decode over a KV cache),
no-grad scoring passes and the training forward/backward over the group rows, as objectives/rl/ runs
it. Shapes only: the models are config.json files built on the meta device; with no tokenizer beside
them the prompt length is `rl.max_prompt_length` (the estimate's stated fallback), so most tests go
through the same calls as before RL was modelled and fail on the old code by their numbers.

Predicted vs measured (CPU, one thread = half this machine's 230 GFLOP/s bound, SmolLM2-135M-Instruct,
LoRA r16 all-linear, fp32, jemalloc as `tunesmith train` runs; the two pins below reproduce the
predicted column):

| run | quantity | predicted | measured | predicted / measured |
|---|---|---:|---:|---:|
| (a) GRPO bench: `bench/grpo_vs_trl.py --model /tmp/smollm2`, 4 prompts (37 tokens) x 4 completions of <= 16 | CPU s/step | 6.51 | 5.36 | 1.21 |
| | generation / training s/step | 2.62 / 3.72 | ~2.5 / ~2.8 (profile split of 5.36) | |
| | peak MB over the loaded model | 1,099 | 1,262 | 0.87 |
| (b) PPO HH-RLHF: `bench/ppo_hh.py` PPO, 8 prompts (mean 46, longest 93) x 1 of <= 64, ppo_epochs 2, beta 0.3, SmolLM2 reward model | CPU s/step at 64-token completions | 17.3 | 13.0 (626 s / 48 steps) | 1.33 |
| | the same at the run's mean completion (31 tokens, `--generation-tokens 31`) | 11.2 | 13.0 | 0.86 |
| | peak RSS (VmHWM, the run's report.md) | 3.19 GiB | 2.9 GiB | 1.10 |

The old estimate (sft shapes at data.max_length) said 10.96 GiB and 50 s/step for (a), 20.1 GiB for (b).
"Over the loaded model" (bench/grpo_vs_trl.py) subtracts the RSS after `from_pretrained`, which maps the
fp32 safetensors lazily: the load adds 152 MiB of RSS (measured here), the rest of the 513 MiB of weights
faults in during the first step, so the comparable prediction is peak - framework - 152 MiB.
"""

import json
from dataclasses import replace

import pytest

from tunesmith.config import validate_config
from tunesmith.estimate import estimate, estimate_plan, model_shape, plan_from_config
from tunesmith.estimate.devices import GIB, Device

TOTAL = 158_016  # the 2-layer Llama of test_estimate_arithmetic.py
ONE_THREAD = Device("cpu, 1 thread", "cpu", 64 * GIB, 0.115, 0.115)  # 230 GFLOP/s over 2 cores, one used
SMOLLM2 = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152,
           "tie_word_embeddings": True, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5}


def _model(tmp_path_factory, name: str, config: dict) -> str:
    d = tmp_path_factory.mktemp("cfg") / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _model(tmp_path_factory, "llama2l", {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512,
        "tie_word_embeddings": False, "max_position_embeddings": 256})


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    return _model(tmp_path_factory, "smollm2", SMOLLM2)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Write a line about the {w}."}) + "\n" for w in ["river", "stone", "cloud", "sun"]))
    return str(p)


def rl_config(model_dir, prompts, method="grpo", adapter="lora", attn="sdpa", rl=None, **train):
    rl = {"num_generations": 4, "max_new_tokens": 16, "max_prompt_length": 20, "rewards": ["length"], **(rl or {})}
    return validate_config({"model": {"path": model_dir, "attn_implementation": attn}, "method": method,
                            "data": {"train": [prompts]}, "rl": rl,
                            "adapter": {"type": adapter, **({"r": 8, "dropout": 0.0} if adapter == "lora" else {})},
                            "train": {"micro_batch_size": 2, "precision": "fp32", **train}})


def plan(cfg, target="cpu", prompt=None, gen=0):
    """No tokenizer beside the test configs: the prompts are rl.max_prompt_length (20) long unless given."""
    extra = {} if prompt is None else {"prompt_tokens": prompt}
    return plan_from_config(cfg, target=target, generation_tokens=gen, **extra)


def est(model_dir, cfg, target="cpu", prompt=None, gen=0, device=ONE_THREAD):
    return estimate_plan(model_shape(model_dir), plan(cfg, target, prompt, gen), device, overhead=0)


def test_a_group_is_one_row_with_its_prompt_once(model_dir, prompts):
    """2 prompts of 20 tokens x 4 completions of 16: shared, 2 rows of 20 + 4·16 = 84 tokens (168);
    without sharing (flash-attention-2 takes no 4D mask), 8 rows of 20 + 16 = 36 (288)."""
    p = plan(rl_config(model_dir, prompts))
    assert p.rl.share_prompts and (p.train_rows(), p.seq_len, p.tokens_per_micro_batch()) == (2, 84, 168)
    assert p.segment_attention() and not p.masked_attention()  # the CPU's mask-free segment attention
    fa2 = plan(rl_config(model_dir, prompts, attn="flash_attention_2"), target="gpu")
    assert not fa2.rl.share_prompts and (fa2.train_rows(), fa2.seq_len, fa2.tokens_per_micro_batch()) == (8, 36, 288)
    dense = plan(rl_config(model_dir, prompts), target="gpu")  # sdpa on a GPU: the dense 4D mask
    assert dense.rl.share_prompts and dense.masked_attention()


def test_data_max_length_plays_no_part(model_dir, prompts):
    a = est(model_dir, rl_config(model_dir, prompts))
    cfg = rl_config(model_dir, prompts)
    b = est(model_dir, cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": 8192})}))
    assert a.plan.seq_len == b.plan.seq_len == 84
    assert (a.peak_bytes, a.step_seconds) == (b.peak_bytes, b.step_seconds)


def test_kv_cache_is_every_row_of_the_step_at_prompt_plus_max_new_tokens(model_dir, prompts):
    """2 (k, v) x 2 layers x kv width 32 x (30 + 16) positions x (2 prompts x 2 micro-batches x 4) rows x 4 B."""
    e = est(model_dir, rl_config(model_dir, prompts, grad_accum_steps=2), prompt=(20, 30))
    assert e.breakdown.get("kv cache") == 2 * 2 * 32 * 46 * 16 * 4
    longer = est(model_dir, rl_config(model_dir, prompts, rl={"max_new_tokens": 64}, grad_accum_steps=2), prompt=(20, 30))
    assert longer.breakdown.get("kv cache") == 2 * 2 * 32 * 94 * 16 * 4
    assert [t.kind for t in e.breakdown.terms if t.name == "kv cache"] == ["generation"]


def test_generation_scales_with_group_size_and_completion_length(model_dir, prompts):
    e4 = est(model_dir, rl_config(model_dir, prompts))
    e8 = est(model_dir, rl_config(model_dir, prompts, rl={"num_generations": 8}))
    assert e8.breakdown.get("kv cache") == 2 * e4.breakdown.get("kv cache")
    assert e8.flops["decode"] == pytest.approx(2 * e4.flops["decode"])
    assert e8.flops["prefill"] == e4.flops["prefill"]  # each distinct prompt is prefilled once
    # Training: 2·(20 + 8·16) tokens against 2·(20 + 4·16): the prompt is not repeated per completion.
    assert e8.plan.tokens_per_micro_batch() / e4.plan.tokens_per_micro_batch() == pytest.approx(296 / 168)
    # 16 -> 32 new tokens: 15 -> 31 decode forwards, each over a longer context.
    e32 = est(model_dir, rl_config(model_dir, prompts, rl={"max_new_tokens": 32}))
    assert 31 / 15 <= e32.flops["decode"] / e4.flops["decode"] < 31 / 15 * 1.2
    assert e32.phases["generation"] > 1.9 * e4.phases["generation"]


def test_reuse_spreads_the_rollout_not_the_training(model_dir, prompts):
    ppo = {"num_generations": 1, "beta": 0.05}
    one = est(model_dir, rl_config(model_dir, prompts, method="ppo", rl=ppo))
    two = est(model_dir, rl_config(model_dir, prompts, method="ppo", rl={**ppo, "ppo_epochs": 2}))
    assert two.phases["generation"] == pytest.approx(one.phases["generation"] / 2)
    assert two.phases["scoring"] == pytest.approx(one.phases["scoring"] / 2)
    assert two.phases["training"] == pytest.approx(one.phases["training"])
    it = est(model_dir, rl_config(model_dir, prompts, rl={"num_iterations": 3}, save_every=0))
    assert it.plan.rl.reuse == 3 and it.plan.rl.policy_pass  # the reused batch needs its old log-probs


def test_scoring_passes_follow_the_config(model_dir, prompts):
    """GRPO at beta 0 and num_iterations 1: no policy pass, the reference every kl_every (10) rollouts
    for the logged kl; beta > 0: every rollout; kl_every 0: never. PPO always scores (values)."""
    base = est(model_dir, rl_config(model_dir, prompts))
    assert base.flops["policy scoring"] == 0 and base.flops["reference"] == pytest.approx(base.flops["forward"] / 10)
    kl = est(model_dir, rl_config(model_dir, prompts, rl={"beta": 0.1}))
    assert kl.flops["reference"] == pytest.approx(kl.flops["forward"])
    assert est(model_dir, rl_config(model_dir, prompts, rl={"kl_every": 0})).flops["reference"] == 0
    ppo = est(model_dir, rl_config(model_dir, prompts, method="ppo", rl={"num_generations": 1}))
    assert ppo.flops["policy scoring"] == pytest.approx(ppo.flops["forward"]) and ppo.plan.rl.value_head


def test_full_finetuning_keeps_a_reference_copy_only_when_beta_needs_it(model_dir, prompts):
    full_kl = est(model_dir, rl_config(model_dir, prompts, adapter="none", rl={"beta": 0.1}))
    assert full_kl.breakdown.get("reference model") == 4 * TOTAL and full_kl.plan.reference == "frozen_copy"
    full = est(model_dir, rl_config(model_dir, prompts, adapter="none"))
    assert full.plan.reference == "none" and full.breakdown.get("reference model") == 0 and full.flops["reference"] == 0
    lora_kl = est(model_dir, rl_config(model_dir, prompts, rl={"beta": 0.1}))
    assert lora_kl.plan.reference == "adapter_disabled" and lora_kl.breakdown.get("reference model") == 0
    assert full_kl.peak_bytes - full.peak_bytes == 4 * TOTAL


def test_the_generation_phase_is_not_added_to_the_training_peak(model_dir, prompts):
    b = est(model_dir, rl_config(model_dir, prompts, rl={"max_new_tokens": 200, "num_generations": 16})).breakdown
    gen = sum(t.bytes for t in b.terms if t.kind == "generation")
    training = sum(t.bytes for t in b.terms if t.kind not in ("cpu", "forward", "backward", "generation")) + b.get("gradients")
    persistent = sum(t.bytes for t in b.terms if t.kind == "persistent")
    assert gen > 0 and b.device_bytes() == max(training, persistent + gen) < training + gen


def test_prompt_lengths_come_from_the_data(tiny_dir, prompts, tok, tmp_path):
    from tunesmith.objectives.rl.data import prompt_ids

    p = plan_from_config(rl_config(str(tiny_dir), prompts, rl={"max_prompt_length": 512}), target="cpu")
    want = [len(prompt_ids(tok, [{"role": "user", "content": f"Write a line about the {w}."}])) for w in ["river", "stone", "cloud", "sun"]]
    assert (p.rl.prompt_tokens, p.rl.prompt_tokens_max) == (sum(want) / 4, max(want))
    assert p.rl.prompt_source.startswith("data: 4 prompts")
    # Prompts over rl.max_prompt_length are dropped by the run, so they are not counted either.
    short = [n for n in want if n == min(want)]
    if len(short) < 4:
        c = plan_from_config(rl_config(str(tiny_dir), prompts, rl={"max_prompt_length": min(want)}), target="cpu")
        assert (c.rl.prompt_tokens_max, c.rl.prompt_source) == (min(want), f"data: {len(short)} prompts rendered with the chat template")
    # No tokenizer beside the config: the stated upper bound, rl.max_prompt_length.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_dir / "config.json").read_text())
    q = plan_from_config(rl_config(str(bare), prompts, rl={"max_prompt_length": 300}), target="cpu")
    assert (q.rl.prompt_tokens, q.rl.prompt_tokens_max) == (300, 300) and "rl.max_prompt_length" in q.rl.prompt_source


def test_cli_estimate_of_a_grpo_config(model_dir, prompts, tmp_path, capsys):
    import yaml

    from tunesmith.cli import main

    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"path": model_dir}, "method": "grpo", "data": {"train": [prompts], "max_length": 2048},
                                   "adapter": {"type": "lora", "r": 8}, "rl": {"num_generations": 4, "max_new_tokens": 16, "rewards": ["length"]},
                                   "train": {"micro_batch_size": 2, "precision": "fp32"}}))
    assert main(["estimate", str(cfg), "--prompt-tokens", "20", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["plan"]["seq_len"] == 84 and j["plan"]["rl"]["prompt_tokens"] == 20
    assert set(j["phase_seconds"]) == {"generation", "scoring", "training"} and j["breakdown"]["kv cache"]["kind"] == "generation"
    assert main(["estimate", str(cfg), "--prompt-tokens", "20"]) == 0
    text = capsys.readouterr().out
    assert all(k in text for k in ("kv cache", "generation", "scoring", "training", "4 completions"))


def test_the_run_s_own_estimate_takes_prompt_lengths_from_its_data(model_dir, prompts):
    import torch

    from tunesmith.estimate.check import before_model

    cfg = rl_config(model_dir, prompts)
    pre = before_model(cfg, torch.device("cpu"), 1, {"examples": {"count": 4, "mean": 20.0, "max": 30}})
    assert "generation" in pre["line"] and pre["predicted_step_seconds"] > 0
    longer = before_model(cfg, torch.device("cpu"), 1, {"examples": {"count": 4, "mean": 20.0, "max": 60}})
    assert longer["predicted_peak_bytes"] > pre["predicted_peak_bytes"]  # the longest prompt sizes memory


def test_grpo_bench_a_within_1_5x_of_measured(smol_dir, prompts):
    """(a): 5.36 CPU s/step and 1,262 MB over the loaded model, measured (see the module docstring)."""
    cfg = rl_config(smol_dir, prompts, rl={"target_length": 24, "loss_type": "dapo"}, micro_batch_size=4, lr=1e-3)
    cfg = cfg.model_copy(update={"adapter": cfg.adapter.model_copy(update={"r": 16, "alpha": 32, "target_modules": "all-linear"})})
    cfg = cfg.model_copy(update={"rl": cfg.rl.model_copy(update={"max_prompt_length": 37})})  # the bench's 37-token prompts
    p = replace(plan(cfg), allocator="jemalloc")
    e = estimate_plan(model_shape(smol_dir), p, ONE_THREAD)
    assert 5.36 / 1.5 < e.step_seconds < 5.36 * 1.5
    assert e.phases["generation"] > 0.35 * e.step_seconds  # the profile: generation ~47% of the step
    over_loaded = e.peak_bytes - e.breakdown.get("framework") - 152 * 2**20
    assert 1262e6 / 1.5 < over_loaded < 1262e6 * 1.5


def test_ppo_hh_b_within_1_5x_of_measured(smol_dir, prompts, tmp_path):
    """(b): ~13.0 CPU s/step (626 s for 48 steps) and a 2.9 GiB peak RSS, measured; its reward model is
    a SmolLM2 `method: reward` run, loaded beside the policy."""
    import yaml

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.yaml").write_text(yaml.safe_dump({"model": {"path": smol_dir}, "method": "reward", "data": {"train": [prompts]}}))
    cfg = rl_config(smol_dir, prompts, method="ppo", micro_batch_size=8,
                    rl={"num_generations": 1, "max_new_tokens": 64, "max_prompt_length": 128, "beta": 0.3, "ppo_epochs": 2,
                        "rewards": [{"reward_model": str(rm)}]})
    cfg = cfg.model_copy(update={"adapter": cfg.adapter.model_copy(update={"r": 16, "alpha": 32, "target_modules": "all-linear"})})
    e = estimate_plan(model_shape(smol_dir), replace(plan(cfg, prompt=(46.4, 93)), allocator="jemalloc"), ONE_THREAD)
    assert e.breakdown.get("reward model rm") == 4 * 134_515_008  # fp32, the tied head's embedding counted once
    assert e.flops["reward model"] > 0 and e.flops["reference"] == pytest.approx(e.flops["forward"] / 2)  # per step, reuse 2
    assert 13.0 / 1.5 < e.step_seconds < 13.0 * 1.5
    assert 2.9 * GIB / 1.5 < e.peak_bytes < 2.9 * GIB * 1.5


def test_estimate_reads_the_config_and_data(smol_dir, prompts):
    """The public entry: a grpo config through `estimate()`, prompts given (no tokenizer beside the config)."""
    e = estimate(rl_config(smol_dir, prompts), prompt_tokens=37)
    assert e.plan.rl.prompt_tokens == 37 and e.plan.seq_len == 37 + 4 * 16 and e.phases is not None


def test_bad_rl_lengths_name_the_key(model_dir, prompts):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--generation-tokens 17 exceeds `rl.max_new_tokens` \(16\)"):
        plan(rl_config(model_dir, prompts), gen=17)
    with pytest.raises(ConfigError, match="--prompt-tokens 0: must be >= 1"):
        estimate(rl_config(model_dir, prompts), prompt_tokens=0)
    assert plan(rl_config(model_dir, prompts), gen=8).rl.completion_tokens == 8  # the expected length, below the cap


def test_an_unreadable_reward_model_run_is_said_not_guessed(model_dir, prompts, tmp_path):
    cfg = rl_config(model_dir, prompts, method="ppo", rl={"num_generations": 1, "rewards": [{"reward_model": str(tmp_path / "nope")}]})
    e = est(model_dir, cfg)
    assert e.breakdown.get("reward model nope") == 0 and e.flops["reward model"] == 0
    assert "not estimated" in next(t.detail for t in e.breakdown.terms if t.name == "reward model nope")


def test_vllm_generation_is_said_to_be_outside_the_model(model_dir, prompts):
    cfg = rl_config(model_dir, prompts)
    cfg = cfg.model_copy(update={"rl": cfg.rl.model_copy(update={"generator": "vllm"})})
    e = est(model_dir, cfg, target="gpu", device=Device("gpu", "gpu", 80 * GIB, 312.0, 156.0))
    assert e.breakdown.get("kv cache") == 0 and "NOT MODELLED" in next(t.detail for t in e.breakdown.terms if t.name == "vllm engine")
