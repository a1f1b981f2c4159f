"""Issue 16: what `tunesmith train` says at start and how it logs when stderr is a file: epochs unused
under max_steps and a trained lm_head (full logits) are stated, progress is plain lines."""

from __future__ import annotations

import pytest

from tunesmith.train.run import train

pytestmark = pytest.mark.integration


def test_train_start_notes_and_plain_progress_in_a_log(alpaca64, tiny_dir, tmp_path, capsys):
    ov = [f"model.path={tiny_dir}", f"data.train={alpaca64}", "data.max_length=96", "train.precision=fp32",
          "train.max_steps=3", "train.epochs=2", "train.micro_batch_size=4", "train.save_every=0",
          "adapter.r=4", "adapter.modules_to_save=[lm_head]", f"output_dir={tmp_path / 'run'}"]
    summary = train(None, ov)
    err = capsys.readouterr().err  # pytest's capture is not a terminal, like a CI log
    assert "note: `train.max_steps: 3` decides the length; `train.epochs: 2` is not used" in err
    assert "note: `adapter.modules_to_save` trains lm_head as a full copy, so the loss computes the full" in err
    # transformers' own "Loading weights" bar is silenced by the CLI (_quiet_libraries), not by train()
    ours = [line for line in err.split("\n") if "train:" in line]
    assert ours and not any("\r" in line for line in ours)
    assert ours[-1].startswith("train: 3/3") and summary["steps"] == 3
