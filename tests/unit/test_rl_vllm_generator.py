"""`rl.generator: vllm` without vLLM: a fake `vllm` module (sys.modules) records what the generator
hands the engine (constructor arguments, prompts, per-row SamplingParams, the LoRARequest and the
adapter files as they were at generate time) and returns canned outputs. What vLLM itself does
with them is not tested here (no GPU, no vLLM): see the README's `rl.generator` section."""

import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.objectives.rl.rollout.generation import step_seed
from tunesmith.objectives.rl.rollout.vllm_generator import VLLMGenerator, max_lora_rank


class _Recorder:
    llm_kwargs: list = []
    calls: list = []
    outputs: list = []  # (token_ids, finish_reason) per prompt of the next generate


def _fake_vllm():
    rec = _Recorder
    rec.llm_kwargs, rec.calls, rec.outputs = [], [], []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LoRARequest:
        def __init__(self, name, int_id, path):
            self.name, self.int_id, self.path = name, int_id, path

    class LLM:
        def __init__(self, **kw):
            rec.llm_kwargs.append(kw)

        def generate(self, prompts, sampling_params=None, lora_request=None, use_tqdm=True):
            path = Path(lora_request.path)
            rec.calls.append({"prompts": prompts, "params": [p.kw for p in sampling_params], "lora": lora_request,
                              "files": sorted(f.name for f in path.iterdir()),
                              "weights": load_file(path / "adapter_model.safetensors")})
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=tuple(ids), finish_reason=why)])
                    for ids, why in rec.outputs[: len(prompts)]]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    return {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}


@pytest.fixture
def fake_vllm(monkeypatch):
    for name, mod in _fake_vllm().items():
        monkeypatch.setitem(sys.modules, name, mod)
    return _Recorder


def _cfg(tiny_dir, out, *extra):
    return load_config(None, [f"model.path={tiny_dir}", "data.train=d.jsonl", f"output_dir={out}", "method=grpo",
                              "rl.generator=vllm", "rl.vllm_gpu_memory=0.4", "train.seed=7", *extra])


def _ctx(device="cuda", rank=0):
    return types.SimpleNamespace(device=torch.device(device), process_index=rank)


@pytest.fixture
def policy(tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model = get_peft_model(base, LoraConfig(r=12, lora_alpha=24, target_modules=["q_proj", "v_proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # a trained adapter: merging it would change the base weights
    return types.SimpleNamespace(model=model)


@pytest.mark.parametrize("extra, key", [
    (["adapter.type=none"], "adapter.type: lora"),
    (["adapter.type=dora"], "adapter.type: lora"),
    (["adapter.modules_to_save=[lm_head]"], "adapter.modules_to_save"),
    (["adapter.init=pissa"], "adapter.init"),
])
def test_config_refuses_what_vllm_cannot_take(tmp_path, extra, key):
    with pytest.raises(ConfigError, match=r"rl\.generator: vllm") as e:
        _cfg("m", tmp_path, *extra)
    assert key in str(e.value)


def test_vllm_memory_without_the_vllm_generator_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"rl\.vllm_gpu_memory"):
        load_config(None, ["model.path=m", "data.train=d.jsonl", "method=grpo", "rl.vllm_gpu_memory=0.5"])
    assert load_config(None, ["model.path=m", "data.train=d.jsonl", "method=grpo"]).rl.generator == "hf"


def test_not_importable_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ConfigError, match=r"rl\.generator: vllm.*needs vLLM"):
        VLLMGenerator(_cfg("m", tmp_path), _ctx(), [2])


def test_a_cpu_device_is_refused(tmp_path, fake_vllm):
    with pytest.raises(ConfigError, match=r"rl\.generator: vllm.*CUDA.*cpu"):
        VLLMGenerator(_cfg("m", tmp_path), _ctx("cpu"), [2])
    assert fake_vllm.llm_kwargs == []


def test_engine_arguments(tmp_path, fake_vllm, tiny_dir):
    VLLMGenerator(_cfg(tiny_dir, tmp_path, "adapter.r=12", "rl.max_new_tokens=32", "rl.max_prompt_length=100"), _ctx(), [2])
    (kw,) = fake_vllm.llm_kwargs
    assert kw["model"] == str(tiny_dir) and kw["enable_lora"] is True and kw["max_lora_rank"] == 16
    assert kw["gpu_memory_utilization"] == 0.4 and kw["seed"] == 7 and kw["max_model_len"] == 132
    assert kw["dtype"] == "float32" and kw["trust_remote_code"] is False  # fp32: this CPU config's precision
    assert max_lora_rank(_cfg("m", tmp_path, "adapter.r=8", "adapter.rank_pattern={q_proj: 40}").adapter) == 64


def test_adapter_handed_over_fresh_each_step_and_never_merged(tmp_path, fake_vllm, tiny_dir, policy):
    gen = VLLMGenerator(_cfg(tiny_dir, tmp_path), _ctx(), [2])
    peft = policy.model
    base_before = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}
    fake_vllm.outputs = [([5, 2], "stop")] * 2
    gen.sample(policy, [[1, 3], [1, 3]], step=0)
    with torch.no_grad():  # the policy trains between rollouts
        for n, p in peft.named_parameters():
            if "lora_A" in n:
                p.add_(1.0)
    gen.sample(policy, [[1, 3], [1, 3]], step=1)
    first, second = fake_vllm.calls
    assert (first["lora"].int_id, second["lora"].int_id) == (1, 2) and first["lora"].name != second["lora"].name
    assert first["lora"].path != second["lora"].path
    for call in (first, second):  # adapter only, in safetensors: no base weight reaches vLLM
        assert call["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
        assert call["weights"] and all("lora_" in k for k in call["weights"])
    now = {k: v for k, v in peft.state_dict().items() if "lora_A" in k}
    sent = second["weights"]
    assert len(sent) == 2 * len(now)
    for k, v in now.items():  # the second request carries the weights as they were at step 1
        saved = k.replace(".default", "")
        assert torch.equal(sent[saved], v) and not torch.equal(first["weights"][saved], v)
    for n, p in peft.named_parameters():  # never merged: base unchanged, LoRA layers still unmerged
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n
    assert not any(getattr(m, "merged", False) for m in peft.modules())
    assert not list(tmp_path.glob("rollout_adapter*"))  # each step's files go once vLLM has generated


def test_per_row_seeds_and_sampling_settings(tmp_path, fake_vllm, tiny_dir, policy):
    cfg = _cfg(tiny_dir, tmp_path, "rl.temperature=0.7", "rl.top_p=0.9", "rl.max_new_tokens=24", "rl.stop=['###']")
    gen = VLLMGenerator(cfg, _ctx(rank=1), [2, 9])
    fake_vllm.outputs = [([5], "length")] * 3
    gen.sample(policy, [[1, 3], [1, 3], [4]], step=5, first_row=3)
    (call,) = fake_vllm.calls
    assert call["prompts"] == [{"prompt_token_ids": [1, 3]}, {"prompt_token_ids": [1, 3]}, {"prompt_token_ids": [4]}]
    assert [p["seed"] for p in call["params"]] == [step_seed(7, 5, r) for r in (3, 4, 5)]
    for p in call["params"]:
        assert p["n"] == 1 and p["temperature"] == 0.7 and p["top_p"] == 0.9 and p["max_tokens"] == 24
        assert p["stop"] == ["###"] and p["stop_token_ids"] == [2, 9] and p["include_stop_str_in_output"] is True
        assert p["top_k"] == -1 and p["min_p"] == 0.0 and p["repetition_penalty"] == 1.0
    assert "rank1" in call["lora"].path


def test_outputs_become_completions(tmp_path, fake_vllm, tiny_dir, policy):
    gen = VLLMGenerator(_cfg(tiny_dir, tmp_path), _ctx(), [2])
    fake_vllm.outputs = [([5, 6, 2], "stop"), ([7, 8, 9], "length"), ([4], "stop")]
    done = gen.sample(policy, [[1], [1], [3]], step=0)
    assert [(c.ids, c.truncated) for c in done] == [([5, 6, 2], False), ([7, 8, 9], True), ([4], False)]
    fake_vllm.outputs = [([5], "abort")]
    with pytest.raises(RuntimeError, match="abort"):
        gen.sample(policy, [[1]], step=1)
    fake_vllm.outputs = []
    with pytest.raises(RuntimeError, match="0 outputs for 1 prompts"):
        gen.sample(policy, [[1]], step=2)
    assert not list(tmp_path.glob("rollout_adapter*"))  # removed even when generate's result is refused


def test_a_killed_runs_leftover_adapters_are_removed(tmp_path, fake_vllm, tiny_dir):
    (tmp_path / "rollout_adapter.rank0.7").mkdir()
    (tmp_path / "rollout_adapter.rank1.3").mkdir()  # another process's: not ours to delete
    (tmp_path / "adapter").mkdir()
    VLLMGenerator(_cfg(tiny_dir, tmp_path), _ctx(), [2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "rollout_adapter.rank1.3"]


def test_the_rollout_samples_with_vllm_when_configured(tmp_path, fake_vllm, tiny_dir, tok, policy):
    from tunesmith.objectives.rl.data import PromptRow
    from tunesmith.objectives.rl.grpo import GRPOObjective

    cfg = _cfg(tiny_dir, tmp_path, "rl.num_generations=2", "rl.rewards=[length]", "rl.target_length=2",
               "rl.kl_every=0", "rl.samples_every=0", "rl.max_new_tokens=3")
    obj = GRPOObjective(cfg)
    ctx = types.SimpleNamespace(device=torch.device("cuda"), process_index=1, tokenizer=tok, pad_id=tok.pad_token_id,
                                wrapper=policy)
    obj.setup(ctx)
    assert fake_vllm.llm_kwargs  # the engine was made once, at setup
    a, b = tok.encode("ab", add_special_tokens=False), tok.encode("abcd", add_special_tokens=False)
    fake_vllm.outputs = [(a + [tok.eos_token_id], "stop"), (b[:3], "length")]
    row = PromptRow([1, 4, 5], [{"role": "user", "content": "x"}])
    (mb,) = obj.rollout(policy, [[row]], step=3)
    (call,) = fake_vllm.calls
    assert [p["seed"] for p in call["params"]] == [step_seed(7, 3, r) for r in (2, 3)]  # process 1: rows 2, 3
    assert [(s.completion_ids, s.truncated) for s in mb] == [(a + [tok.eos_token_id], False), (b[:3], True)]
    assert mb[0].reward > mb[1].reward  # the rewards scored vLLM's completions
