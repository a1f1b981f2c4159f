"""The bad-input sweep's data-loss cases (issue 16): nothing the user had is lost, whatever output
path and flags they give. Each stage goes through tunesmith.io; these tests drive the real stages."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith.cli import main
from tunesmith.errors import DataError, UserError
from tunesmith.train.run import train

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def user_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "photos").mkdir(exist_ok=True)
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    return folder


@pytest.fixture
def data_dir(tmp_path, alpaca64):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(alpaca64, d / "train.jsonl")
    return d


@pytest.fixture
def make_config(tmp_path, tiny_dir, data_dir):
    def make(output_dir, **overrides) -> Path:
        cfg = {
            "model": {"path": str(tiny_dir), "dtype": "fp32"},
            "data": {"train": [str(data_dir / "train.jsonl")], "format": "alpaca", "max_length": 128},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"precision": "fp32", "max_steps": 2, "micro_batch_size": 4, "grad_accum_steps": 1,
                      "save_every": 0, "progress": False, "seed": 0},
            "output_dir": str(output_dir),
        }
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = cfg
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        path = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


# --- train ---------------------------------------------------------------------------------------


def test_overwrite_never_deletes_the_working_directory(tmp_path, make_config, monkeypatch):
    """`tunesmith train cfg.yaml output_dir=. --overwrite` in a folder of the user's files."""
    home = user_files(tmp_path / "home")
    before = tree(home)
    monkeypatch.chdir(home)
    with pytest.raises(UserError, match="is the working directory"):
        train(make_config("."), overwrite=True)
    assert tree(home) == before


def test_overwrite_never_deletes_an_unrelated_folder(tmp_path, make_config):
    folder = user_files(tmp_path / "documents")
    before = tree(folder)
    with pytest.raises(UserError, match="tunesmith did not write"):
        train(make_config(folder), overwrite=True)
    assert tree(folder) == before


@pytest.mark.parametrize("where", ["data folder", "parent of the data", "model"])
def test_output_dir_may_not_hold_an_input(tmp_path, make_config, data_dir, tiny_dir, where):
    out = {"data folder": data_dir, "parent of the data": tmp_path, "model": tiny_dir}[where]
    before = tree(out) if where != "parent of the data" else tree(data_dir)
    with pytest.raises(UserError, match="input"):
        train(make_config(out), overwrite=True)
    assert (tree(out) if where != "parent of the data" else tree(data_dir)) == before


def test_overwrite_checks_the_new_data_before_touching_the_old_run(tmp_path, make_config):
    run = tmp_path / "run"
    train(make_config(run))
    before = tree(run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "there"}\n{"instruction": "broken", "output": \n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        train(make_config(run, **{"data.train": [str(bad)]}), overwrite=True)
    assert tree(run) == before


def test_a_failed_overwrite_puts_the_old_run_back(tmp_path, make_config, monkeypatch):
    from tunesmith.objectives.sft import CausalLMObjective

    run = tmp_path / "run"
    train(make_config(run))
    before = tree(run)
    real_step, calls = CausalLMObjective.step, []

    def step(self, model, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the new run
        return real_step(self, model, batch)

    monkeypatch.setattr(CausalLMObjective, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(run, **{"train.max_steps": 3}), overwrite=True)
    assert tree(run) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []

    monkeypatch.setattr(CausalLMObjective, "step", real_step)
    train(make_config(run, **{"train.max_steps": 3}), overwrite=True)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []


def test_a_run_from_before_the_marker_can_still_be_overwritten(tmp_path, make_config):
    run = tmp_path / "run"
    train(make_config(run))
    (run / ".tunesmith.json").unlink()  # as written by an older tunesmith
    (run / "stale.txt").write_text("old")
    train(make_config(run), overwrite=True)
    assert not (run / "stale.txt").exists() and (run / ".tunesmith.json").is_file()


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, make_config, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(["train", str(make_config(f))]) == 2
    err = capsys.readouterr().err
    assert "output_dir" in err and "is a file, not a directory" in err and "Traceback" not in err
    assert f.read_text() == "mine"


def test_a_run_that_fails_validation_leaves_nothing_behind(tmp_path, make_config):
    run = tmp_path / "run"
    with pytest.raises(UserError):
        train(make_config(run, **{"train.micro_batch_size": 64, "train.grad_accum_steps": 4}))  # 64 rows < one step
    assert not run.exists()
    train(make_config(run))  # the rerun is not refused
    assert (run / "adapter").is_dir()


def test_resume_refuses_a_finished_run_without_a_checkpoint(tmp_path, make_config, capsys):
    run = tmp_path / "run"
    train(make_config(run))  # save_every: 0, so no checkpoint
    before = tree(run)
    with pytest.raises(UserError, match=r"finished run \(adapter/\) and no complete checkpoint"):
        train(make_config(run, **{"train.max_steps": 4}), resume=True)
    assert tree(run) == before


def test_resume_refuses_a_directory_that_never_held_a_run(tmp_path, make_config):
    with pytest.raises(UserError, match="holds no run"):
        train(make_config(tmp_path / "new"), resume=True)
    assert not (tmp_path / "new").exists()
    folder = user_files(tmp_path / "documents")
    before = tree(folder)
    with pytest.raises(UserError, match="holds no run"):
        train(make_config(folder), resume=True)
    assert tree(folder) == before


def test_resume_with_a_checkpoint_continues_the_finished_run(tmp_path, make_config, capsys):
    run = tmp_path / "run"
    train(make_config(run, **{"train.save_every": 2}))
    train(make_config(run, **{"train.save_every": 2, "train.max_steps": 3}), resume=True)
    assert "resumed from" in capsys.readouterr().err
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


# --- prepare, merge, eval, init-model ------------------------------------------------------------


def test_prepare_overwrite_keeps_a_folder_of_user_files(tmp_path, data_dir):
    folder = user_files(tmp_path / "documents")
    before = tree(folder)
    code = main(["prepare", "--input", str(data_dir / "train.jsonl"), "--out", str(folder), "--overwrite"])
    assert code == 2 and tree(folder) == before


def test_prepare_cleans_the_temp_dir_of_a_killed_prepare(tmp_path, data_dir):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = tmp_path / f".prepared.tmp-{proc.pid}"  # what a kill -9 during prepare left
    (stale / "nested").mkdir(parents=True)
    (stale / "spool-0.jsonl").write_text("x" * 10_000)
    assert main(["prepare", "--input", str(data_dir / "train.jsonl"), "--out", str(tmp_path / "prepared")]) == 0
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # and the prepared set can be replaced deliberately
    assert main(["prepare", "--input", str(data_dir / "train.jsonl"), "--out", str(tmp_path / "prepared"), "--overwrite"]) == 0


def _lora_adapter(tiny_dir: Path, path: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_merge_out_equal_to_the_base_is_refused(tmp_path, tiny_dir):
    base = tmp_path / "base"
    shutil.copytree(tiny_dir, base)
    adapter = _lora_adapter(base, tmp_path / "adapter")
    before = tree(base)
    code = main(["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(base), "--overwrite"])
    assert code == 2 and tree(base) == before
    code = main(["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(tmp_path), "--overwrite"])
    assert code == 2 and tree(base) == before


def test_eval_overwrite_keeps_a_folder_of_user_files(tmp_path, tiny_dir, capsys):
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": f"Which colour is {c}?", "choices": ["red", "blue"], "answer": i}) + "\n"
                          for i, c in enumerate(["red", "blue"])))
    folder = user_files(tmp_path / "documents")
    before = tree(folder)
    code = main(["eval", "--model", str(tiny_dir), "--tasks", f"mc={mc}", "--out", str(folder), "--overwrite"])
    assert code == 2 and "tunesmith did not write" in capsys.readouterr().err
    assert tree(folder) == before
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_dir), "--tasks", f"mc={mc}", "--out", str(out)]) == 0
    assert main(["eval", "--model", str(tiny_dir), "--tasks", f"mc={mc}", "--out", str(out), "--overwrite"]) == 0
    assert (out / "results.json").is_file() and (out / ".tunesmith.json").is_file()


def test_init_model_overwrite_keeps_the_home_directory(tmp_path, monkeypatch):
    home = user_files(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    before = tree(home)
    assert main(["init-model", "--out", "~", "--overwrite"]) == 2
    assert tree(home) == before
