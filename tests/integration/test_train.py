"""`tunesmith train` end to end on the tiny model, in fp32 on the CPU (bf16 where that is the point).

Each test trains for a few steps and checks what a user relies on: the loss falls, what should
train trains and nothing else moves, the run directory holds exactly the documented files, real
readers (transformers, PEFT) load the output and compute what the trained model computed, and the
traps of ../shared/PITFALLS.md (1, 13, 14, 18, 19) stay closed.

Models under training are observed through `spy`, a training callback: it keeps the model object
the loop trains, a copy of its parameters at the start, and every gradient the optimizer is
handed. Nothing in the run is altered.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.errors import TrainingError, UserError
from tunesmith.models.bnb_cpu import use_portable_cpu_kernel
from tunesmith.models.tiny import CHATML_TEMPLATE
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.callbacks import Callback
from tunesmith.train.metrics import read_metrics
from tunesmith.train.run import train

pytestmark = pytest.mark.integration

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
CHECKPOINT_FILES = {"trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng-0.pt", "state.json", "manifest.json"}
METRIC_KEYS = {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"}


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Matrices this small run faster on one thread than on several (hand-off costs more than the
    math), and two threads on a shared 2-core machine run up to 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


@pytest.fixture
def make_config(tmp_path, tiny_dir, alpaca64):
    """`make_config("name", **{"train.lr": 1e-3})` -> path of a YAML config whose output_dir is
    tmp_path/name. The base: tiny model in fp32, LoRA r 8 without dropout, 4 rows per step, no
    checkpoints, no progress bar."""

    def make(name: str, **overrides) -> Path:
        cfg = {
            "model": {"path": str(tiny_dir), "dtype": "fp32"},
            "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "train": {"precision": "fp32", "max_steps": 4, "micro_batch_size": 4, "grad_accum_steps": 1,
                      "save_every": 0, "progress": False, "seed": 0},
            "output_dir": str(tmp_path / name),
        }
        for key, value in overrides.items():
            _set(cfg, key, value)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


class Spy(Callback):
    """Watches a run through its callbacks: the model the loop trains, its parameters before step 1,
    and the gradients the optimizer is handed at each step. Pass it as `train(..., callbacks=[spy])`."""

    def __init__(self):
        self.model: torch.nn.Module | None = None  # what build_model built: the model the loop trains
        self.initial: dict[str, torch.Tensor] = {}  # its parameters before step 1
        self.grads: list[dict[str, torch.Tensor]] = []  # per optimizer step

    def on_train_start(self, module, optimizer):
        self.model = module.model
        self.initial = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def on_before_optimizer_step(self, step, module):
        self.grads.append({n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None})


@pytest.fixture
def spy() -> Spy:
    return Spy()


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def tree(root: Path) -> dict[str, str]:
    """Every file under root -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def base_name(peft_name: str) -> str:
    """`base_model.model.model.layers.0.mlp.up_proj.base_layer.weight` -> `model.layers.0.mlp.up_proj.weight`."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def probe_ids(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(5, vocab, (2, 24), generator=g)  # (B, T), no special tokens


@torch.no_grad()
def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits.float()  # (B, T, V)


def nf4_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)


def assert_no_pickles_outside_checkpoints(run_dir: Path) -> None:
    for p in run_dir.rglob("*"):
        if p.is_file() and "checkpoints" not in p.relative_to(run_dir).parts:
            assert p.suffix not in PICKLE_SUFFIXES, f"pickled file in the run output: {p}"


def assert_readable_by_others_as_umask_allows(run_dir: Path) -> None:
    """Every file has the mode a plain open() gives: a server running as another user can read the
    result (mkstemp and the safetensors writer would leave 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(p.relative_to(run_dir)): oct(p.stat().st_mode & 0o777) for p in run_dir.rglob("*") if p.is_file()}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))


def assert_checkpoint_files(step_dir: Path) -> None:
    """Exactly the documented files; the .pt files hold tensors and numbers only (weights_only loads them)."""
    assert {p.name for p in step_dir.iterdir()} == CHECKPOINT_FILES
    assert ckpt.verify(step_dir) is None
    for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        torch.load(step_dir / name, weights_only=True)


# --- 1. full / LoRA / QLoRA -------------------------------------------------------------------------

STEPS = 30


@pytest.mark.parametrize("kind", ["full", "lora", "qlora"])
def test_train_learns_and_writes_a_loadable_result(kind, make_config, spy, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_sha = hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    overrides = {"train.max_steps": STEPS, "train.save_every": 10, "train.scheduler": "constant"}
    if kind == "full":
        overrides.update({"adapter.type": "none", "train.lr": 3e-4})
    else:
        overrides.update({"adapter.r": 16, "adapter.alpha": 32, "adapter.dropout": 0.05, "train.lr": 2e-3})
    if kind == "qlora":
        overrides["model.quantization"] = "nf4"
    summary = train(make_config(kind, **overrides), callbacks=[spy])
    run_dir = Path(summary["run_dir"])
    out_name = "model" if kind == "full" else "adapter"

    # The loss falls by a clear margin (a random-init tiny model starts near ln(vocab) ~ 7.6).
    loss = losses(run_dir)
    assert len(loss) == STEPS
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    assert last < first - 0.25, f"{kind}: mean loss {first:.4f} (first 5 steps) -> {last:.4f} (last 5)"

    # Exactly the documented run directory.
    assert {p.name for p in run_dir.iterdir()} == {".tunesmith.json", "config.yaml", "metrics.jsonl", "checkpoints", out_name,
                                                "loss.png", "report.md"}
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-20", "step-30"]  # keep_checkpoints 2
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"step-20", "step-30"}  # no leftover .tmp-*
    for step_dir in ckpt.list_checkpoints(run_dir / "checkpoints"):
        assert_checkpoint_files(step_dir)
    assert_no_pickles_outside_checkpoints(run_dir)
    assert_readable_by_others_as_umask_allows(run_dir)
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reached 30 steps" in (run_dir / "report.md").read_text()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == STEPS

    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert METRIC_KEYS <= r.keys(), r
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["lr"] == overrides["train.lr"]
    assert all(b["tokens"] > a["tokens"] for a, b in zip(records, records[1:]))

    # What was meant to train changed; what was frozen did not, and the base on disk is untouched.
    model = spy.model
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    frozen = set(params) - trainable
    if kind == "full":
        assert frozen == set()
    else:
        assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
        assert len(trainable) == 2 * 7 * 2  # A and B on the 7 linear layers of each of the 2 layers
    for n in trainable:
        assert not torch.equal(params[n].detach(), spy.initial[n]), f"{n} did not train"
    for n in frozen:
        assert torch.equal(params[n].detach(), spy.initial[n]), f"frozen {n} changed"
    assert hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest() == base_sha
    # Against the model on disk too (4-bit packed weights are compared above, before/after only).
    on_disk = load_file(str(tiny_dir / "model.safetensors"))
    compared = 0
    for n, p in params.items():
        ref = on_disk.get(base_name(n))
        if ref is None or p.dtype != ref.dtype:
            continue
        compared += 1
        assert torch.equal(p.detach().cpu(), ref) is (n in frozen), n
    assert compared >= (len(on_disk) if kind != "qlora" else 7)  # qlora: embeddings, 5 norms, lm_head

    # The final checkpoint holds exactly the trained parameters (the loop's wrapper adds `model.`).
    final_ckpt = load_file(str(run_dir / "checkpoints/step-30/trainable.safetensors"))
    assert {k.removeprefix("model.") for k in final_ckpt} == trainable
    for k, v in final_ckpt.items():
        assert v.dtype == torch.float32 and torch.equal(v, params[k.removeprefix("model.")].detach()), k

    # A real reader loads the output and computes what the trained model computed.
    out = run_dir / out_name
    ids = probe_ids(model.config.vocab_size if kind == "full" else model.get_base_model().config.vocab_size)
    expected = logits_of(model, ids)
    if kind == "full":
        loaded = AutoModelForCausalLM.from_pretrained(out)
        assert loaded.dtype == torch.float32
        # Same files as any HF model dir (tiny_dir, an init-model output, also has tunesmith's marker).
        assert {p.name for p in out.iterdir()} == {p.name for p in tiny_dir.iterdir()} - {".tunesmith.json"}
    else:
        base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32,
                                                    **({"quantization_config": nf4_config()} if kind == "qlora" else {}))
        use_portable_cpu_kernel(base)  # one 4-bit CPU path on every machine (models/bnb_cpu.py)
        loaded = PeftModel.from_pretrained(base, out)
        tokenizer_files = {p.name for p in tiny_dir.iterdir()} - {"config.json", "generation_config.json", "model.safetensors",
                                                                  ".tunesmith.json"}
        # README.md is PEFT's model card, written by save_pretrained; tunesmith_adapter.json says which base
        # quantization the adapter was trained on (merge and eval read it).
        assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md",
                                                   "tunesmith_adapter.json"} | tokenizer_files
        side = json.loads((out / "tunesmith_adapter.json").read_text())
        assert side["base_quantization"] == ("nf4" if kind == "qlora" else "none") and side["task_type"] == "CAUSAL_LM"
    diff = (logits_of(loaded, ids) - expected).abs().max().item()
    assert diff < 1e-5, f"{out} computes other logits than the trained model: max |diff| {diff:.3g}"
    if kind != "full":
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert (cfg["r"], cfg["lora_alpha"]) == (16, 32)
    assert (expected - logits_of(AutoModelForCausalLM.from_pretrained(tiny_dir), ids)).abs().max() > 1e-2  # it did train

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHATML_TEMPLATE  # the template used in training (PITFALLS 8)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<s><|im_start|>user\nhi<|im_end|>\n"


# --- 2. gradient checkpointing + LoRA (PITFALLS 14) ------------------------------------------------


def test_gradient_checkpointing_trains_every_lora_b(make_config, spy):
    summary = train(make_config("gc", **{"train.gradient_checkpointing": True, "train.max_steps": 1,
                                         "train.save_every": 1, "train.lr": 1e-3}), callbacks=[spy])
    # The path under test really ran (what transformers' is_gradient_checkpointing checks, without its rename warning).
    assert any(getattr(m, "gradient_checkpointing", False) for m in spy.model.modules())
    weights = load_file(str(Path(summary["run_dir"]) / "checkpoints/step-1/trainable.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(lora_b) == 14
    zero = [k for k, v in lora_b.items() if not v.abs().sum() > 0]
    assert not zero, f"lora_B still zero after one step: {zero}"


# --- 3. loss normalisation under gradient accumulation (PITFALLS 1) -------------------------------


def test_micro_batch_and_accumulation_give_the_same_step(make_config, spy, monkeypatch):
    """8 rows of different lengths in one step, split 8x1, 1x8 and 2x4: the loss is the mean over
    all label tokens of the step, so loss, gradients and updated weights do not depend on the split."""
    from tunesmith.objectives.sft import CausalLMObjective

    real_step, micro_losses = CausalLMObjective.step, {}

    def step(self, model, batch):  # records (summed loss, label tokens) of each micro-batch
        loss_sum, metrics = real_step(self, model, batch)
        micro_losses[current].append((loss_sum.item(), self.loss_units(batch)))
        return loss_sum, metrics

    monkeypatch.setattr(CausalLMObjective, "step", step)
    runs = {}
    for micro, accum in [(8, 1), (1, 8), (2, 4)]:
        current = (micro, accum)
        micro_losses[current] = []
        spy.grads.clear()
        summary = train(make_config(f"mb{micro}x{accum}", **{
            "adapter.type": "none", "train.micro_batch_size": micro, "train.grad_accum_steps": accum,
            "train.max_steps": 1, "train.max_grad_norm": 0, "train.lr": 1e-3, "train.save_every": 1}), callbacks=[spy])
        run_dir = Path(summary["run_dir"])
        (record,) = read_metrics(run_dir / "metrics.jsonl")
        weights = load_file(str(run_dir / "checkpoints/step-1/trainable.safetensors"))
        runs[(micro, accum)] = record, spy.grads[0], weights

    ref_record, ref_grads, ref_weights = runs[(8, 1)]
    for key, (record, grads, weights) in runs.items():
        assert record["tokens"] == ref_record["tokens"], key  # the same 8 rows
        assert record["loss"] == pytest.approx(ref_record["loss"], rel=1e-5), key
        assert record["grad_norm"] == pytest.approx(ref_record["grad_norm"], rel=1e-4), key
        assert grads.keys() == ref_grads.keys()
        for n, g in grads.items():
            torch.testing.assert_close(g, ref_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"{key} grad {n}: {m}")
        # Adam's first update is lr * g / (|g| + eps) ~ +-lr; where |g| is near eps it amplifies
        # rounding, so the weights get 1% of lr (a wrong sign anywhere is 200%).
        for n, w in weights.items():
            torch.testing.assert_close(w, ref_weights[n], rtol=0, atol=1e-5, msg=lambda m: f"{key} weight {n}: {m}")
    # The 8 rows differ in label count, so the mean of per-micro-batch means (the bug) would differ.
    sums, units = zip(*micro_losses[(1, 8)])
    assert len(set(units)) > 1
    assert sum(sums) / sum(units) == pytest.approx(ref_record["loss"], rel=1e-5)
    assert abs(sum(s / u for s, u in zip(sums, units)) / 8 - ref_record["loss"]) > 1e-3


# --- 4. fp32 master weights under bf16 (PITFALLS 13) ----------------------------------------------


def test_bf16_training_keeps_fp32_master_weights(make_config, tiny_dir):
    """lr 1e-4 moves a weight at 1.0 by <= ~1e-4 per step: far below bf16's spacing there (2^-8
    below 1.0, 2^-7 above), so in a bf16 master copy every update would round away."""
    steps = 100
    summary = train(make_config("bf16", **{"adapter.type": "none", "model.dtype": "bf16", "train.precision": "bf16",
                                           "train.lr": 1e-4, "train.max_steps": steps, "train.save_every": steps}))
    run_dir = Path(summary["run_dir"])
    weights = load_file(str(run_dir / f"checkpoints/step-{steps}/trainable.safetensors"))
    initial = load_file(str(tiny_dir / "model.safetensors"))
    norms = [k for k in weights if k.endswith("norm.weight")]
    assert len(norms) == 5
    for k in norms:
        assert torch.equal(initial[k.removeprefix("model.")], torch.ones_like(initial[k.removeprefix("model.")]))  # started at 1.0
        assert weights[k].dtype == torch.float32, k
        assert (weights[k] - 1.0).abs().max() > 1e-3, f"{k} did not move from 1.0"
    # The result is stored in the storage dtype the config asked for.
    assert {v.dtype for v in load_file(str(run_dir / "model/model.safetensors")).values()} == {torch.bfloat16}


# --- 5. kill -9 and resume (PITFALLS 18) -----------------------------------------------------------

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import torch
    from tunesmith.train.run import train

    torch.set_num_threads(int(sys.argv[3]))

    def die(step, record):
        if step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    train(sys.argv[1], callbacks=[die])
    raise SystemExit("the run was not killed")
""")

RESUME_STEPS, KILL_AT = 12, 7


def _run_killed(config: Path, tmp_path: Path) -> None:
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, str(script), str(config), str(KILL_AT), str(torch.get_num_threads())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.mark.parametrize("damage", ["none", "corrupt newest, stray tmp dir"])
def test_kill_and_resume_reproduces_the_run(damage, make_config, tmp_path, capsys):
    """LoRA with dropout, warm-up and cosine decay: the dropout masks (RNG), the data position,
    the optimizer moments and the schedule must all come back for the losses to be identical."""
    overrides = {"adapter.dropout": 0.1, "train.max_steps": RESUME_STEPS, "train.save_every": 3,
                 "train.warmup_steps": 2, "train.lr": 1e-3}
    straight = Path(train(make_config("straight", **overrides))["run_dir"])

    config = make_config("killed", **overrides)
    run_dir = tmp_path / "killed"
    _run_killed(config, tmp_path)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, KILL_AT + 1))
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-3", "step-6"]
    assert not (run_dir / "adapter").exists()

    resume_from = "step-6"
    if damage != "none":
        # A truncated copy of the newest checkpoint, and a half-written one that claims a later step.
        weights = run_dir / "checkpoints/step-6/trainable.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
        stray = run_dir / "checkpoints/.tmp-step-9"
        shutil.copytree(run_dir / "checkpoints/step-3", stray)
        (stray / "manifest.json").unlink()
        (stray / "state.json").write_text(json.dumps({**json.loads((stray / "state.json").read_text()), "step": 9}))
        resume_from = "step-3"

    capsys.readouterr()
    train(config, resume=True)
    err = capsys.readouterr().err
    assert f"resumed from {run_dir / 'checkpoints' / resume_from}" in err
    if damage != "none":
        assert "skipping checkpoint" in err and "step-6" in err and "trainable.safetensors has" in err

    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, RESUME_STEPS + 1))  # no step twice
    assert losses(run_dir) == losses(straight)
    assert [r["lr"] for r in records] == [r["lr"] for r in read_metrics(straight / "metrics.jsonl")]
    a = load_file(str(run_dir / "adapter/adapter_model.safetensors"))
    b = load_file(str(straight / "adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- 6. a non-finite loss stops the run (PITFALLS 19) ----------------------------------------------


def test_nan_loss_stops_before_touching_the_weights(make_config, spy, monkeypatch):
    from tunesmith.objectives.sft import CausalLMObjective

    real_step = CausalLMObjective.step
    calls = []

    def step(self, model, batch):
        calls.append(1)
        loss_sum, metrics = real_step(self, model, batch)
        return (loss_sum * float("nan") if len(calls) == 4 else loss_sum), metrics  # NaN gradients too

    monkeypatch.setattr(CausalLMObjective, "step", step)
    config = make_config("nan", **{"train.max_steps": 8, "train.save_every": 2})
    run_dir = Path(yaml.safe_load(config.read_text())["output_dir"])
    with pytest.raises(TrainingError) as e:
        train(config, callbacks=[spy])
    msg = str(e.value)
    assert "step 4" in msg and "not finite" in msg
    assert str(run_dir / "checkpoints" / "step-2") in msg
    assert len(calls) == 4

    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-2"]
    good = run_dir / "checkpoints/step-2"
    assert ckpt.verify(good) is None
    assert all(torch.isfinite(v).all() for v in load_file(str(good / "trainable.safetensors")).values())
    # The NaN gradients never reached the weights, and no result was written from them.
    assert all(torch.isfinite(p).all() for p in spy.model.parameters())
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert not (run_dir / "adapter").exists()


# --- 7. the run directory is never clobbered; config typos are one clear error ---------------------


def test_existing_run_is_refused_unless_overwrite(make_config):
    config = make_config("run", **{"train.max_steps": 2})
    run_dir = Path(train(config)["run_dir"])
    before = tree(run_dir)

    with pytest.raises(UserError, match="--overwrite"):
        train(config)
    assert tree(run_dir) == before

    (run_dir / "stale.txt").write_text("from an older run")
    train(config, ["train.max_steps=3"], overwrite=True)
    assert not (run_dir / "stale.txt").exists()
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]


def test_cli_config_typo_is_a_clear_error(make_config, tmp_path):
    config = make_config("typo")
    raw = yaml.safe_load(config.read_text())
    raw["train"]["micro_batch_sise"] = raw["train"].pop("micro_batch_size")
    config.write_text(yaml.safe_dump(raw))
    cli = Path(sys.executable).with_name("tunesmith")
    proc = subprocess.run([str(cli), "train", str(config)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tunesmith train: error: {config}: invalid config",
        "  - `train.micro_batch_sise` is not a config key; did you mean `train.micro_batch_size`?",
    ]
    assert not (tmp_path / "typo").exists()  # nothing was created for a config that fails


# --- 8. eval loss and early stopping ---------------------------------------------------------------


def test_eval_and_early_stopping(make_config):
    """A tiny lr moves the eval loss by far less than min_delta, so the second eval counts as no
    improvement and patience 1 stops the run there (step 4 of 20)."""
    summary = train(make_config("early", **{
        "data.eval_fraction": 0.2, "train.eval_every": 2, "train.early_stopping_patience": 1,
        "train.early_stopping_min_delta": 0.01, "train.lr": 1e-6, "train.max_steps": 20}))
    run_dir = Path(summary["run_dir"])
    assert summary["data"]["eval_examples"] == 12 and summary["data"]["rows"] == 52

    records = read_metrics(run_dir / "metrics.jsonl")
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    assert [s for s, _ in evals[:2]] == [2, 4]
    (_, first), (_, second) = evals[:2]
    assert math.isfinite(first) and abs(second - first) < 0.01  # the reason for the stop is in the numbers
    assert max(r["step"] for r in records) == 4
    assert summary["steps"] == 4
    assert summary["stop_reason"].startswith("early stopping")
    report = (run_dir / "report.md").read_text()
    assert "early stopping" in report


# --- 9. two processes equal one (PITFALLS 1, across processes) -------------------------------------


@pytest.mark.multiprocess
def test_two_processes_match_one(make_config, tmp_path):
    """Same global batch of 8 rows per step: 2 processes x micro 2 x accum 2 against 1 x 4 x 2.
    The sampler hands the same rows to each step; DDP must turn its gradient mean into the sum
    the normalisation expects."""
    common = {"train.max_steps": 4, "train.grad_accum_steps": 2, "train.max_grad_norm": 0, "train.lr": 1e-3}
    single = Path(train(make_config("single", **{**common, "train.micro_batch_size": 4}))["run_dir"])

    config = make_config("ddp", **{**common, "train.micro_batch_size": 2})
    proc = _torchrun(config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = tmp_path / "ddp"

    a, b = read_metrics(ddp / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    assert [r["step"] for r in a] == [1, 2, 3, 4]  # written once, by rank 0
    for ra, rb in zip(a, b):
        assert ra["tokens"] == rb["tokens"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
    wa = load_file(str(ddp / "adapter/adapter_model.safetensors"))
    wb = load_file(str(single / "adapter/adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-5, msg=lambda m: f"{k}: {m}")


# --- 10. FSDP2: sharded training equals one process, and resumes exactly ----------------------------


def _torchrun(config: Path, *args: str) -> subprocess.CompletedProcess:
    from torchrun import torchrun_train

    return torchrun_train(config, *args)


@pytest.mark.multiprocess
def test_fsdp_matches_one_process_and_resumes(make_config, tmp_path):
    """Full fine-tuning sharded over 2 processes (FSDP2 on gloo, `train.fsdp: true`), 2 x micro 2 x
    accum 2, against 1 process x 4 x 2: the same losses and grad norms, and the gathered final
    weights equal. Then the run loses its last checkpoint and result and resumes from step 2 under
    FSDP: the final weights come back bit for bit (the checkpoint holds full tensors, gathered)."""
    common = {"adapter.type": "none", "train.max_steps": 4, "train.grad_accum_steps": 2, "train.lr": 1e-3}
    single = Path(train(make_config("single", **{**common, "train.micro_batch_size": 4}))["run_dir"])
    config = make_config("fsdp", **{**common, "train.micro_batch_size": 2, "train.fsdp": True, "train.save_every": 2})
    proc = _torchrun(config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "fsdp"

    a, b = read_metrics(run_dir / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
    straight = load_file(str(run_dir / "model/model.safetensors"))
    ref = load_file(str(single / "model/model.safetensors"))
    assert straight.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(straight[k], ref[k], rtol=0, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # Checkpoints hold full (gathered) tensors, not one rank's shard.
    saved = load_file(str(run_dir / "checkpoints/step-4/trainable.safetensors"))
    assert {k: v.shape for k, v in saved.items()} == {f"model.{k}": v.shape for k, v in ref.items()}

    shutil.rmtree(run_dir / "checkpoints/step-4")
    shutil.rmtree(run_dir / "model")
    proc = _torchrun(config, "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stderr and "step 2" in proc.stderr
    resumed = load_file(str(run_dir / "model/model.safetensors"))
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


def test_fsdp_with_quantization_is_a_config_error(make_config):
    from tunesmith.config import load_config
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="train.fsdp"):
        load_config(make_config("q", **{"train.fsdp": True, "model.quantization": "nf4"}))
