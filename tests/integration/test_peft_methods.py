"""Every `adapter.type` through `tunesmith train` on the tiny model, in fp32 on the CPU.

For each method: the loss falls; only the method's parameters change (every one of them does, no
base weight moves); the trainable count equals the closed form worked out here by hand from the
tiny model's shapes; the saved `adapter/` loads onto a fresh base and gives bit-identical logits (on
a GPU: within GPU_TOL, since kernels there need not be bit-reproducible across model instances);
and where the method is the identity at initialisation (LoRA and its inits, DoRA, IA3, bottleneck)
the wrapped model computes exactly the base model's logits before step 1. Prompt-learning methods
are not the identity by construction (virtual tokens change attention), and the test asserts that
they do change the output, which also proves the prefix reaches attention with `use_cache=False`.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunesmith.adapters import (adapter_type_of, apply_adapter, can_merge, closed_form_trainable, load_adapter,
                                merge_adapter)
from tunesmith.config import AdapterConfig
from tunesmith.errors import UserError
from tunesmith.models.loading import count_parameters
from tunesmith.train.callbacks import Callback
from tunesmith.train.forward import CausalLMLoss
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration

# Tiny Llama: d = 64, L = 2, 4 heads of 16, 2 kv heads (kv = 32), MLP 176, vocab 782 (tied embeddings).
D, L, KV, FF = 64, 2, 32, 176
# Per layer, (d_in, d_out) of q, k, v, o, gate, up, down.
SHAPES = {"q_proj": (D, D), "k_proj": (D, KV), "v_proj": (D, KV), "o_proj": (D, D),
          "gate_proj": (D, FF), "up_proj": (D, FF), "down_proj": (FF, D)}

METHODS = {
    # name: (adapter section, lr, closed form by hand, marker in every trainable parameter's name)
    "lora": ({"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}, 5e-3,
             L * sum(4 * (i + o) for i, o in SHAPES.values()), "lora_"),
    "dora": ({"type": "dora", "r": 4, "alpha": 8, "dropout": 0.0}, 5e-3,
             L * sum(4 * (i + o) + o for i, o in SHAPES.values()), "lora_"),
    # IA3 on all linear layers: attention vectors scale outputs (d_out), MLP ones inputs (d_in).
    "ia3": ({"type": "ia3"}, 1e-1, L * (D + KV + KV + D + D + D + FF), "ia3_l"),
    "prefix": ({"type": "prefix", "prefix": {"num_virtual_tokens": 8}}, 1e-1, L * 2 * 8 * KV, "prompt_encoder"),
    "prompt": ({"type": "prompt", "prompt": {"num_virtual_tokens": 8}}, 3e-1, 8 * D, "prompt_encoder"),
    "ptuning": ({"type": "ptuning", "ptuning": {"num_virtual_tokens": 8, "encoder_hidden_size": 32}}, 3e-2,
                8 * D + (D * 32 + 32) + (32 * 32 + 32) + (32 * D + D), "prompt_encoder"),
    "adapter": ({"type": "adapter", "bottleneck": {"size": 16}}, 5e-3, L * 2 * (2 * D * 16 + 16 + D), "bottleneck"),
}
IDENTITY_AT_INIT = {"lora", "dora", "ia3", "adapter"}
# `train` runs on the GPU when there is one; everything compared with its model follows that model's
# device. Exact on the CPU; on a GPU, results of two model instances / a resumed run agree to this.
GPU_TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Spy(Callback, dict):
    """Training callback: "model" (what build_model built) and "initial" (its parameters before step 1)."""

    def on_train_start(self, module, optimizer):
        self["model"] = module.model
        self["initial"] = {n: p.detach().clone() for n, p in module.model.named_parameters()}


@pytest.fixture
def spy():
    return Spy()


def _config(tmp_path, tiny_dir, alpaca64, adapter: dict, lr: float, steps: int = 12, **model) -> dict:
    return {
        "model": {"path": str(tiny_dir), "dtype": "fp32", **model},
        "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
        "adapter": adapter,
        "train": {"precision": "fp32", "max_steps": steps, "micro_batch_size": 8, "lr": lr, "scheduler": "constant",
                  "save_every": 0, "progress": False, "seed": 0, "loss_chunk_size": 64},
        "output_dir": str(tmp_path / "run"),
    }


def _batch(tok):
    text = ["<|im_start|>user\nAdd 3 and 4.<|im_end|>\n<|im_start|>assistant\n3 plus 4 is 7.<|im_end|>", "red blue green"]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in text]
    T = max(map(len, enc))
    ids = torch.tensor([e + [tok.pad_token_id] * (T - len(e)) for e in enc])
    return ids


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _logits(model, ids):
    """Logits on the CPU; the ids go to wherever the model is (the GPU after `train` on a GPU machine)."""
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids.to(_device(model)), use_cache=False).logits
    return out[:, out.shape[1] - ids.shape[1]:].cpu()


def _assert_same(a, b, device: torch.device):
    if device.type == "cpu":
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, **GPU_TOL)


def _base(tiny_dir, device: torch.device | str = "cpu"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).to(device).eval()


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_saves_and_loads(name, tmp_path, tiny_dir, alpaca64, tok, spy, capsys):
    adapter, lr, by_hand, marker = METHODS[name]
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, tiny_dir, alpaca64, adapter, lr)))
    summary = train(cfg_path, callbacks=[spy])

    # The count: measured == closed form by hand == closed form in code; and train printed it.
    assert summary["trainable_params"] == by_hand
    assert closed_form_trainable(_base(tiny_dir), AdapterConfig(**adapter))[0] == by_hand
    assert f"{by_hand:,} trainable parameters" in capsys.readouterr().err

    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    # A random tiny base is a hard start for prompt methods; 12 steps at these lrs drop the loss ~0.1.
    assert len(losses) == 12 and sum(losses[-2:]) / 2 < losses[0] - 0.05, losses

    model, initial = spy["model"], spy["initial"]
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), initial[n])
        if p.requires_grad:
            assert marker in n, f"{n} is trainable but is not a {name} parameter"
            assert moved, f"{name}: trainable {n} did not change"
        else:
            assert not moved, f"{name}: frozen {n} changed"

    # Save -> load on a fresh base on the same device -> the same logits, bit for bit (GPU: GPU_TOL).
    ids, device = _batch(tok), _device(model)
    trained = _logits(model, ids)
    loaded = load_adapter(_base(tiny_dir, device), tmp_path / "run" / "adapter")
    assert adapter_type_of(tmp_path / "run" / "adapter") == name
    _assert_same(_logits(loaded, ids), trained, device)

    if can_merge(name):
        merged = merge_adapter(loaded, name)
        assert not any(m in n for n, _ in merged.named_parameters() for m in ("lora_", "ia3_"))
        torch.testing.assert_close(_logits(merged, ids), trained, atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises(UserError, match=f"`{name}` adapter cannot be merged"):
            merge_adapter(loaded, name)


@pytest.mark.parametrize("name", list(METHODS))
def test_step_zero_output(name, tiny_dir, tok):
    """Identity-initialised methods leave the base logits unchanged before any step (exactly, up to
    fp32 rounding of the DoRA norm); prompt-learning methods change them (so they really act)."""
    adapter = METHODS[name][0]
    ids = _batch(tok)
    base = _logits(_base(tiny_dir), ids)
    torch.manual_seed(0)
    wrapped = apply_adapter(_base(tiny_dir), AdapterConfig(**adapter))
    out = _logits(wrapped, ids)
    if name in IDENTITY_AT_INIT:
        torch.testing.assert_close(out, base, atol=1e-5, rtol=1e-5)
    else:
        assert (out - base).abs().max() > 1e-3


@pytest.mark.parametrize("init", ["gaussian", "pissa", "olora"])
def test_lora_inits_start_at_the_base(init, tiny_dir, tok):
    """PiSSA/OLoRA move the principal part of W into A·B and subtract it from W: the sum is W again."""
    ids = _batch(tok)
    base = _logits(_base(tiny_dir), ids)
    wrapped = apply_adapter(_base(tiny_dir), AdapterConfig(type="lora", r=4, alpha=4, dropout=0.0, init=init))
    torch.testing.assert_close(_logits(wrapped, ids), base, atol=1e-4, rtol=1e-4)
    if init != "gaussian":  # the base weights were rewritten, so the residual W - A·B is what is frozen
        q = wrapped.base_model.model.model.layers[0].self_attn.q_proj
        assert not torch.equal(q.base_layer.weight, _base(tiny_dir).model.layers[0].self_attn.q_proj.weight)


def test_rslora_and_patterns_count(tiny_dir):
    """rank_pattern changes the count by (r_m - r)·(d_in + d_out) per matched matrix; rsLoRA changes
    the scale to alpha/sqrt(r) = 8/2 = 4 instead of alpha/r = 2, not the count."""
    cfg = AdapterConfig(type="lora", r=4, alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"],
                        rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 2.0})
    model = apply_adapter(_base(tiny_dir), cfg)
    by_hand = L * (4 * (D + D) + 2 * (D + KV))
    assert count_parameters(model)[0] == by_hand == closed_form_trainable(_base(tiny_dir), cfg)[0]
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    v = model.base_model.model.model.layers[0].self_attn.v_proj
    assert q.scaling["default"] == pytest.approx(8 / 4 ** 0.5)
    assert v.r["default"] == 2 and v.scaling["default"] == pytest.approx(2 / 2 ** 0.5)


def test_modules_to_save_trains_embeddings(tmp_path, tiny_dir, alpaca64):
    """New tokens need trainable embeddings: modules_to_save adds embed_tokens in full to the count."""
    adapter = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"],
               "modules_to_save": ["embed_tokens"]}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, tiny_dir, alpaca64, adapter, 5e-3, steps=2)))
    summary = train(cfg_path)
    vocab = _base(tiny_dir).config.vocab_size
    assert summary["trainable_params"] == L * 4 * (D + D) + vocab * D
    saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["embed_tokens"]


QUANTIZED = [(q, m) for q in ("nf4", "int8") for m in METHODS if not (q == "int8" and m == "dora")]


@pytest.mark.parametrize("quant, name", QUANTIZED)
def test_method_on_a_quantized_base(quant, name, tmp_path, tiny_dir, alpaca64, spy):
    """Every method trains on a bitsandbytes 4/8-bit base (DoRA on int8 is refused in config): the loss
    falls, the count is the fp32 one, the quantized weights do not move, the adapter saves and loads."""
    from tunesmith.config import ModelConfig
    from tunesmith.models.loading import load_model

    adapter, lr, by_hand, _ = METHODS[name]
    cfg = _config(tmp_path, tiny_dir, alpaca64, adapter, lr, steps=4, quantization=quant)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    summary = train(tmp_path / "cfg.yaml", callbacks=[spy])
    assert summary["trainable_params"] == by_hand and summary["quantization"] == quant
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < losses[0], losses
    model, initial = spy["model"], spy["initial"]
    quantized = [n for n, p in model.named_parameters() if p.dtype in (torch.uint8, torch.int8)]
    assert quantized and all(torch.equal(model.get_parameter(n), initial[n]) for n in quantized)

    ids = _batch(tok=__import__("transformers").AutoTokenizer.from_pretrained(tiny_dir))
    base = load_model(ModelConfig(path=str(tiny_dir), dtype="fp32", quantization=quant), compute_dtype=torch.float32,
                      device=_device(model))
    loaded = load_adapter(base, tmp_path / "run" / "adapter")
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-4, rtol=1e-4)


def test_cli_prints_the_count_and_rejects_a_foreign_option(tmp_path, tiny_dir, alpaca64, capsys):
    from tunesmith.cli import main

    adapter, lr, by_hand, _ = METHODS["prompt"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(_config(tmp_path, tiny_dir, alpaca64, adapter, lr, steps=1)))
    assert main(["train", str(tmp_path / "cfg.yaml"), "adapter.r=8", "output_dir=" + str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "`adapter.r` applies to adapter.type lora / dora, not prompt; remove it" in err
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    err = capsys.readouterr().err
    assert f"closed form n·d = 8·64 = {by_hand:,} trainable parameters" in err and f"{by_hand:,} exactly" in err


@pytest.mark.parametrize("name", ["prefix", "prompt", "ptuning", "adapter"])
def test_loss_matches_peft_own_label_handling(name, tiny_dir, tok):
    """Virtual tokens must not shift the labels: the loop's summed loss / label count equals the mean
    loss PEFT computes itself when handed the labels (it pads them with -100 for the virtual tokens)."""
    torch.manual_seed(0)
    model = apply_adapter(_base(tiny_dir), AdapterConfig(**METHODS[name][0]))
    ids = _batch(tok)
    labels = ids.masked_fill(ids == tok.pad_token_id, -100)
    labels[:, 0] = -100  # as collate does: the first token is never a label (else PEFT would predict it from the prompt)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    ours = CausalLMLoss(model, chunk_size=16)(ids, positions, labels) / (labels[:, 1:] != -100).sum()
    with torch.no_grad():
        theirs = model(input_ids=ids, labels=labels, use_cache=False).loss
    torch.testing.assert_close(ours.detach(), theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["prompt", "adapter", "dora"])
def test_gradient_checkpointing(name, tmp_path, tiny_dir, alpaca64, spy):
    """Non-reentrant checkpointing keeps every adapter parameter training (PITFALLS 14), virtual tokens and
    hooked bottlenecks included (prefix + checkpointing is refused in config)."""
    adapter, lr, _, _ = METHODS[name]
    cfg = _config(tmp_path, tiny_dir, alpaca64, adapter, lr, steps=2)
    cfg["train"]["gradient_checkpointing"] = True
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "cfg.yaml", callbacks=[spy])
    for n, p in spy["model"].named_parameters():
        if p.requires_grad:
            assert not torch.equal(p.detach(), spy["initial"][n]), n


@pytest.mark.parametrize("name", ["adapter", "prefix"])
def test_resume_reproduces_the_run(name, tmp_path, tiny_dir, alpaca64):
    """4 steps straight == 2 steps + resume to 4 (PITFALLS 18), for our own module and a PEFT prompt method."""
    adapter, lr, _, _ = METHODS[name]
    straight = _config(tmp_path, tiny_dir, alpaca64, adapter, lr, steps=4)
    straight["output_dir"] = str(tmp_path / "straight")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(straight))
    train(tmp_path / "a.yaml")
    split = {**straight, "output_dir": str(tmp_path / "split")}
    split["train"] = {**straight["train"], "max_steps": 2, "save_every": 2}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(split))
    train(tmp_path / "b.yaml")
    train(tmp_path / "b.yaml", ["train.max_steps=4"], resume=True)

    def losses(run):
        return [r["loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in r]

    on_gpu = torch.cuda.is_available()  # where `train` ran
    if on_gpu:
        assert losses("split") == pytest.approx(losses("straight"), **{"rel": GPU_TOL["rtol"], "abs": GPU_TOL["atol"]})
    else:
        assert losses("split") == losses("straight")
    assert len(losses("straight")) == 4
    from safetensors.torch import load_file  # tensors, not bytes: the header's metadata order is not fixed

    a, b = (load_file(str(tmp_path / run / "adapter" / "adapter_model.safetensors")) for run in ("straight", "split"))
    assert a.keys() == b.keys()
    for k in a:
        _assert_same(a[k], b[k], torch.device("cuda" if on_gpu else "cpu"))


def test_prompt_init_text_starts_from_those_embeddings(tiny_dir, tok):
    text = "Answer the instruction."
    model = apply_adapter(_base(tiny_dir), AdapterConfig(type="prompt", prompt={"num_virtual_tokens": 8, "init_text": text}))
    ids = tok(text)["input_ids"]  # as PEFT tokenizes it
    want = [(ids * 8)[i] for i in range(8)]  # PEFT repeats the text's tokens to fill the virtual tokens
    emb = model.get_base_model().get_input_embeddings().weight
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, emb[want])
