"""Each estimate term against hand arithmetic on a 2-layer Llama config (no weights exist: the model
is built on the meta device from config.json alone).

The model: d = 64, L = 2, h = 4 heads of 16, g = 2 kv heads (kv width 32), f = 176 (SwiGLU), V = 512,
untied. Parameters:
  embedding 512·64 = 32,768; lm_head 32,768
  one layer's linears: q 64·64 + k 64·32 + v 64·32 + o 64·64 + gate/up/down 3·64·176 = 46,080; × 2 = 92,160
  norms: 2 per layer × 64 × 2 + final 64 = 320
  total 32,768·2 + 92,160 + 320 = 158,016
LoRA r = 8 on all linears, Σ r·(d_in + d_out) per layer:
  q 8·128 + k 8·96 + v 8·96 + o 8·128 + gate/up/down 3·8·240 = 1,024 + 768 + 768 + 1,024 + 5,760 = 9,344; × 2 = 18,688
"""

import json

import pytest

from tunesmith.config import validate_config
from tunesmith.errors import ConfigError, UserError
from tunesmith.estimate import estimate, estimate_plan, model_shape, plan_from_config
from tunesmith.estimate.devices import GPUS, find_device, this_cpu

TOTAL, LINEAR, LORA_N = 158_016, 92_160, 18_688


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg") / "llama2l"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512,
        "tie_word_embeddings": False, "max_position_embeddings": 256}))
    return str(d)


def run(model_dir, adapter="lora", quant="none", **train):
    cfg = {"model": {"path": model_dir, "quantization": quant},
           "adapter": {"type": adapter, **({"r": 8, "dropout": 0.0} if adapter == "lora" else {})},
           "data": {"max_length": 16},
           "train": {"micro_batch_size": 2, "precision": "fp32", **train}}
    return validate_config(cfg)


def est(model_dir, target="cpu", **kw):
    cfg = run(model_dir, **kw)
    plan = plan_from_config(cfg, target=target)
    return estimate_plan(model_shape(model_dir), plan, this_cpu() if target == "cpu" else GPUS["A100-40GB"], overhead=0)


def test_shape_counts_parameters_by_role(model_dir):
    s = model_shape(model_dir)
    assert (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab) == (64, 2, 4, 2, 16, 176, 512)
    assert s.gated_mlp and not s.tied
    assert (s.embed_params, s.head_params, s.linear_params, s.other_params) == (32_768, 32_768, LINEAR, 320)
    assert s.total_params == TOTAL


def test_lora_states_are_4_4_8_bytes_per_adapter_parameter(model_dir):
    e = est(model_dir)
    assert e.adapter_params == LORA_N
    b = e.breakdown
    assert b.get("trainable") == 4 * LORA_N
    assert b.get("gradients") == 4 * LORA_N
    assert b.get("optimizer") == 8 * LORA_N  # AdamW: exp_avg + exp_avg_sq, fp32
    assert b.get("weights") == 4 * TOTAL  # fp32 frozen base on the CPU
    assert b.get("master weights") == 0


def test_full_finetuning_is_16_bytes_per_parameter_of_states(model_dir):
    b = est(model_dir, adapter="none").breakdown
    assert (b.get("weights"), b.get("gradients"), b.get("optimizer")) == (4 * TOTAL, 4 * TOTAL, 8 * TOTAL)


def test_8bit_adam_is_2_bytes_plus_block_absmax(model_dir):
    b = est(model_dir, optimizer="adamw_8bit").breakdown
    assert b.get("optimizer") == round(LORA_N * (2 + 8 / 256))


def test_nf4_weights_hand_computed(model_dir):
    """NF4 with double quantization: 0.5 B + 1/64 (8-bit absmax per 64) + 4/(64·256) (fp32 per 256 blocks)
    per linear weight; the embedding, head and norms (65,856 params) are fp32 after prepare_model_for_kbit_training."""
    b = est(model_dir, quant="nf4").breakdown
    assert b.get("weights") == round(LINEAR * (0.5 + 1 / 64 + 4 / 16384) + 4 * 65_856)
    single = est(model_dir, quant="nf4", ).plan
    assert single.double_quant


def test_activations_full_finetuning_hand_computed(model_dir):
    """B = 2, T = 16 → 32 tokens, fp32, SDPA without mask (native GQA).
    per token per layer: 7·d + 2·kv + 4·f = 448 + 64 + 704 = 1,216 values × 4 B = 4,864 B, plus (h + 2)·4 = 24 B
    → 4,888 B; × 32 tokens × 2 layers = 312,832 B.
    outside the layers: (6·d·4 + 2·head_dim·4 + 8) · 32 = (1,536 + 128 + 8) · 32 = 53,504 B."""
    b = est(model_dir, adapter="none").breakdown
    assert b.get("activations") == 312_832 + 53_504


def test_checkpointing_keeps_layer_inputs_and_one_layer(model_dir):
    """L·d·4·tokens = 2·64·4·32 = 16,384 B of layer inputs + one layer (4,888·32 = 156,416) + 53,504."""
    b = est(model_dir, adapter="none", gradient_checkpointing=True).breakdown
    assert b.get("activations") == 16_384 + 156_416 + 53_504


def test_packing_adds_the_mask_and_repeated_kv(model_dir):
    """Packed rows: + 2·(d − kv) = 64 values per token per layer (k, v repeated to 4 heads) and a
    (B, 1, T, T) fp32 mask per layer: 2·16·16·4 = 2,048 B. Δ = (64·4·32 + 2,048)·2 layers = 20,480 B.
    That is on a GPU; on the CPU under sdpa packed rows attend per example (train/segment_attention.py):
    no mask, no repeat: Δ = 0."""
    plain = est(model_dir, adapter="none").breakdown.get("activations")
    cfg = run(model_dir, adapter="none")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": True})})
    e = estimate_plan(model_shape(model_dir), plan_from_config(cfg, target="cpu"), this_cpu(), overhead=0)
    assert e.breakdown.get("activations") - plain == 0
    unpacked = plan_from_config(run(model_dir, adapter="none"), target="gpu")
    packed = plan_from_config(cfg, target="gpu")
    gpu = GPUS["A100-80GB"]
    delta = (estimate_plan(model_shape(model_dir), packed, gpu, overhead=0).breakdown.get("activations")
             - estimate_plan(model_shape(model_dir), unpacked, gpu, overhead=0).breakdown.get("activations"))
    assert delta == 20_480


def test_chunked_loss_vs_plain(model_dir):
    """Chunked: min(2048, 2^26 // 512, 32 tokens) = 32 rows × 512 × 4 B = 65,536 + 2·32·64·4 = 16,384.
    Plain: 32 × 512 × (4 + 12) = 262,144."""
    assert est(model_dir).breakdown.get("logits+loss") == 65_536 + 16_384
    assert est(model_dir, loss_chunk_size=0).breakdown.get("logits+loss") == 262_144


def test_zero_stages_shard_the_right_terms(model_dir):
    cfg = run(model_dir, adapter="none")
    s = model_shape(model_dir)
    got = {}
    for stage in ("ddp", "zero1", "zero2", "zero3"):
        plan = plan_from_config(cfg, target="gpu", gpus=4, sharding=stage)
        b = estimate_plan(s, plan, GPUS["A100-80GB"], overhead=0).breakdown
        got[stage] = (b.get("weights"), b.get("gradients"), b.get("optimizer"))
    assert got["ddp"] == (4 * TOTAL, 4 * TOTAL, 8 * TOTAL)
    assert got["zero1"] == (4 * TOTAL, 4 * TOTAL, 8 * TOTAL / 4)
    assert got["zero2"] == (4 * TOTAL, 4 * TOTAL / 4, 8 * TOTAL / 4)
    assert got["zero3"] == (4 * TOTAL / 4, 4 * TOTAL / 4, 8 * TOTAL / 4)


def test_offload_moves_optimizer_to_host(model_dir):
    cfg = run(model_dir, adapter="none")
    plan = plan_from_config(cfg, target="gpu", gpus=2, sharding="zero2", offload="optimizer")
    b = estimate_plan(model_shape(model_dir), plan, GPUS["A100-80GB"], overhead=0).breakdown
    assert b.cpu_bytes() == 8 * TOTAL / 2
    assert all(t.kind == "cpu" for t in b.terms if t.name == "optimizer")


def test_flops_full_is_three_forwards_lora_two_plus_adapter(model_dir):
    """forward per token: 2 · (linears + head) + 4 · h · head_dim · T/2 · L = 2·(92,160 + 32,768) + 4·64·8·2 = 249,856 + 4,096."""
    full, lora = est(model_dir, adapter="none"), est(model_dir)
    fwd = 32 * (2 * (LINEAR + 32_768) + 4 * 64 * 8 * 2)
    assert full.flops["forward"] == fwd and full.flops["backward"] == 2 * fwd
    assert lora.flops["backward"] == fwd + 32 * 6 * LORA_N


def test_largest_micro_batch_is_the_edge(model_dir):
    cfg = run(model_dir, adapter="none")
    s = model_shape(model_dir)
    plan = plan_from_config(cfg, target="gpu")
    dev = GPUS["RTX4090-24GB"]
    e = estimate_plan(s, plan, dev, overhead=0)
    # 24 GiB holds a huge batch of this toy; the reported one fits and one more does not.
    b = e.max_micro_batch
    assert 0 < b <= 1 << 14
    if b < 1 << 14:
        assert estimate_plan(s, plan.with_batch(b), dev, overhead=0).peak_bytes <= dev.capacity
        assert estimate_plan(s, plan.with_batch(b + 1), dev, overhead=0).peak_bytes > dev.capacity


def test_json_schema_is_stable(model_dir):
    e = estimate(None, [f"model.path={model_dir}", "data.max_length=16"], device="A100-40GB")
    j = e.to_json()
    assert {"peak_bytes", "breakdown", "fits", "step_seconds", "max_micro_batch", "model", "plan"} <= set(j)
    assert j["peak_bytes"] == sum(v["bytes"] for k, v in j["breakdown"].items() if v["kind"] not in ("cpu", "forward", "backward")) \
        + max(sum(v["bytes"] for v in j["breakdown"].values() if v["kind"] == k) for k in ("forward", "backward"))
    assert {"this-cpu", "RTX4090-24GB", "A100-40GB", "L40S-48GB", "A100-80GB", "H200-141GB"} <= set(j["fits"])
    assert all(isinstance(r["fits"], bool) for r in j["fits"].values())
    assert j["plan"]["precision"] == "bf16"  # auto resolves to bf16 on a GPU class
    json.dumps(j)


def test_errors_name_the_fix(model_dir):
    with pytest.raises(ConfigError, match="known devices"):
        find_device("TPU-v9")
    with pytest.raises(ConfigError, match="--gpus > 1 needs a GPU"):
        estimate(None, [f"model.path={model_dir}"], device="cpu", gpus=2)
    with pytest.raises(UserError, match="config.json"):
        model_shape(str(model_dir) + "/nothing-here")


def test_run_check_predicts_and_measures_this_process(model_dir):
    """What `tunesmith train` records: the estimate before the model and the RSS high-water mark after."""
    import torch

    from tunesmith.estimate.check import after_run, before_model

    pre = before_model(run(model_dir), torch.device("cpu"))
    assert pre["kind"] == "cpu" and "estimate: peak" in pre["line"]
    post = after_run(pre, torch.device("cpu"))
    # Nothing was trained here: the process is its framework baseline, which the estimate includes.
    assert post["measured_peak_bytes"] > 0 and post["predicted_peak_bytes"] > 0
    assert post["estimate_error"] == (post["predicted_peak_bytes"] - post["measured_peak_bytes"]) / post["measured_peak_bytes"]


@pytest.mark.parametrize("malloc, share", [("jemalloc", 0.035), ("tcmalloc", 0.035), ("mimalloc", 0.17), ("mmap", 0.0), ("glibc", 0.8)])
def test_allocator_term_follows_the_malloc(model_dir, malloc, share):
    """The CPU peak is the live bytes plus the allocator's slack: jemalloc/mimalloc with purging off
    (what `tunesmith train` re-executes under, train/allocator.py) keep 3.5 % (tcmalloc too) / 17 % of the activations,
    glibc pinned ("mmap") none, glibc's dynamic threshold 0.8 x (bench/README.md)."""
    from dataclasses import replace

    plan = replace(plan_from_config(run(model_dir), target="cpu"), allocator=malloc)
    b = estimate_plan(model_shape(model_dir), plan, this_cpu(), overhead=0).breakdown
    assert b.get("allocator") == round(share * b.get("activations"))
    base = estimate_plan(model_shape(model_dir), replace(plan, allocator="mmap"), this_cpu(), overhead=0).breakdown
    assert b.device_bytes() - base.device_bytes() == b.get("allocator")
