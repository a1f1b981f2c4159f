"""tunesmith.io: what an output claim refuses, and that the old output survives every failure."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import io
from tunesmith.errors import UserError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ours(path: Path, stage: str, files=("a.txt",)) -> Path:
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text(f"old {name}")
    io.write_marker(path, stage)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "home"])
def test_protected_directories_are_refused_even_empty_or_with_overwrite(tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    out = {"cwd": Path("."), "parent of cwd": Path(".."), "home": Path("~")}[where]
    with pytest.raises(UserError, match="working directory|home directory"):
        io.check_output(out, "train", overwrite=True)
    with pytest.raises(UserError, match="filesystem root"):
        io.check_output("/", "train", overwrite=True)


def test_foreign_directory_is_refused_with_overwrite(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UserError, match=r"already exists and is not empty; pass --overwrite"):
        io.check_output(out, "merge", overwrite=False)
    with pytest.raises(UserError, match=r"tunesmith did not write \(no \.tunesmith\.json inside\)"):
        io.check_output(out, "merge", overwrite=True)
    assert _tree(out) == {"cat.jpg": b"\xff\xd8"}


def test_own_output_of_the_same_stage_only(tmp_path):
    run = _ours(tmp_path / "run", "train")
    assert io.check_output(run, "train", overwrite=True) == run
    with pytest.raises(UserError, match="holds a training run, not prepared data"):
        io.check_output(run, "prepare", overwrite=True)
    merged = _ours(tmp_path / "merged", "merge")
    assert io.check_output(merged, "quantize", overwrite=True) == merged  # both are model directories
    empty = tmp_path / "empty"
    empty.mkdir()
    assert io.check_output(empty, "eval", overwrite=False) == empty  # nothing to lose


@pytest.mark.parametrize("stage, files", [
    ("train", ["config.yaml", "metrics.jsonl"]),
    ("train", ["config.yaml", "checkpoints/step-2/state.json"]),
    ("prepare", ["manifest.json", "prepare_report.md", "train/data.arrow"]),
    ("eval", ["results.json", "report.md"]),
    ("merge", ["report.md", "config.json", "model.safetensors"]),
])
def test_outputs_from_before_the_marker_are_recognised_by_layout(tmp_path, stage, files):
    out = tmp_path / "old"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    assert io.output_stage(out) == stage
    assert io.check_output(out, stage, overwrite=True) == out


def test_a_downloaded_model_is_not_taken_for_ours(tmp_path):
    """config.json + weights + README.md is any hub model: only report.md (merge/quantize) marks ours."""
    out = tmp_path / "hub-model"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        (out / name).write_text("x")
    assert io.output_stage(out) is None
    with pytest.raises(UserError, match="tunesmith did not write"):
        io.check_output(out, "init-model", overwrite=True)


def test_output_equal_to_or_containing_an_input_is_refused(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    with pytest.raises(UserError, match=r"contains the input .*train\.jsonl"):
        io.check_output(tmp_path / "data", "train", overwrite=True, inputs=[data])
    with pytest.raises(UserError, match=r"is the input"):
        io.check_output(tmp_path / "data", "merge", overwrite=True, inputs=[tmp_path / "data"])
    # Inside an input directory is fine (nothing of the input is replaced); a hub id is no path.
    assert io.check_output(tmp_path / "data" / "out", "eval", overwrite=False, inputs=[tmp_path / "data", "org/model"])


def test_output_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(UserError, match="exists and is a file, not a directory"):
        io.check_output(f, "train", overwrite=True, what="output_dir")
    assert f.read_text() == "mine"


def test_output_file_rules(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n")
    with pytest.raises(UserError, match="is the input"):
        io.check_output_file(data, overwrite=True, inputs=[data])
    with pytest.raises(UserError, match="is a directory"):
        io.check_output_file(tmp_path, overwrite=True)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        io.check_output_file(data, overwrite=False)
    assert io.check_output_file(tmp_path / "new" / "scores.jsonl", overwrite=False) == tmp_path / "new" / "scores.jsonl"


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = _ours(tmp_path / "merged", "merge")
    before = _tree(out)
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_dir(out, "merge", overwrite=True) as tmp:
            (tmp / "half.safetensors").write_text("half")
            raise RuntimeError("boom")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp dir left

    with io.atomic_dir(out, "merge", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [io.MARKER, "new.txt"]
    assert json.loads((out / io.MARKER).read_text())["stage"] == "merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # the old one is gone once the new is in


def test_atomic_dir_checks_again_before_swapping(tmp_path):
    """A folder of the user's appeared at `out` while the stage worked: it is not replaced."""
    out = tmp_path / "out"
    with pytest.raises(UserError, match="tunesmith did not write"):
        with io.atomic_dir(out, "eval", overwrite=True) as tmp:
            (tmp / "report.md").write_text("r")
            out.mkdir()
            (out / "mine.txt").write_text("mine")
    assert _tree(out) == {"mine.txt": b"mine"}


def test_claim_dir_moves_aside_then_restores_or_commits(tmp_path):
    run = _ours(tmp_path / "run", "train", files=("config.yaml", "metrics.jsonl"))
    before = _tree(run)
    claim = io.claim_dir(run, "train", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [io.MARKER]  # a fresh directory to write into
    (run / "metrics.jsonl").write_text("new, half-written")
    claim.restore()
    assert _tree(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    claim = io.claim_dir(run, "train", overwrite=True)
    (run / "metrics.jsonl").write_text("new")
    claim.commit()
    assert (run / "metrics.jsonl").read_text() == "new" and not (run / "config.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_claim_dir_resume_keeps_what_is_there(tmp_path):
    run = _ours(tmp_path / "run", "train", files=("config.yaml", "metrics.jsonl"))
    before = _tree(run)
    claim = io.claim_dir(run, "train", overwrite=False, resume=True)
    claim.restore()  # nothing was moved aside: nothing to put back, nothing removed
    assert _tree(run) == before


def test_stale_siblings_of_killed_processes(tmp_path, capsys):
    out = tmp_path / "prepared"
    dead, alive = _dead_pid(), os.getpid()
    stale_tmp = tmp_path / f".prepared.tmp-{dead}"  # the name prepare used before io.py
    stale_tmp.mkdir()
    (stale_tmp / "spool-0.jsonl").write_text("x" * 1000)
    live_tmp = tmp_path / f".prepared.tmp-{alive}-{io._HOST}cd1234"  # a prepare of this process, still working
    remote = tmp_path / f".prepared.tmp-{dead}-{'0000' if io._HOST != '0000' else '1111'}cd1234"  # another host's
    remote.mkdir()
    live_tmp.mkdir()
    moved = tmp_path / f".prepared.old-{dead}-{io._HOST}abcd"  # killed mid-swap: the user's old output
    moved.mkdir()
    (moved / "manifest.json").write_text("{}")
    io.write_marker(moved, "prepare")
    other = tmp_path / f".other.tmp-{dead}"  # another output's: not ours to touch
    other.mkdir()

    with io.atomic_dir(out, "prepare", overwrite=True) as tmp:
        assert not stale_tmp.exists() and live_tmp.exists() and other.exists() and remote.exists()
        assert (out / "manifest.json").read_text() == "{}"  # put back, since `out` was missing
        (tmp / "manifest.json").write_text('{"new": 1}')
    assert "restored" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == '{"new": 1}'


def test_a_moved_aside_output_beside_an_existing_one_is_kept_and_named(tmp_path):
    out = _ours(tmp_path / "run", "train")
    moved = tmp_path / f".run.old-{_dead_pid()}-{io._HOST}abcd"
    moved.mkdir()
    (moved / "metrics.jsonl").write_text("the old run")
    notes = io.clean_stale(out)
    assert moved.is_dir() and len(notes) == 1 and str(moved) in notes[0]


def test_atomic_write_bytes_replaces_whole_files_with_plain_permissions(tmp_path):
    path = tmp_path / "sub" / "results.json"
    io.atomic_write_bytes(path, b"one")
    io.atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with io.atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
