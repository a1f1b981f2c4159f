"""fp16 resume needs the GradScaler's state (loss scale, growth tracker) in the checkpoint: without
it a resumed run restarts at the initial scale of 65536 and its next steps differ (skipped or not).
fp16 training needs a GPU; the save/restore itself is checked here on the CPU with a real
`torch.amp.GradScaler` carrying a state that training would have produced."""

import pytest
import torch

from tunesmith.train import checkpoint as ckpt

TRAINED = {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 37}


def _parts():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def _scaler(state=None):
    scaler = torch.amp.GradScaler("cpu")
    if state:
        scaler.load_state_dict(state)
    return scaler


def test_scaler_state_survives_a_checkpoint(tmp_path):
    """After 7 halvings and 37 good steps (scale 512, tracker 37) the restored scaler has exactly that
    state, not the fresh 65536 / 0; scaler.pt is in the manifest like every other file."""
    model, opt, sched = _parts()
    saved = ckpt.save_checkpoint(tmp_path, 3, model, opt, sched, {"tokens": 1}, scaler=_scaler(TRAINED))
    assert ckpt.verify(saved) is None and (saved / "scaler.pt").is_file()
    assert "scaler.pt" in (saved / ckpt.MANIFEST).read_text()

    fresh = _scaler()
    assert fresh.state_dict()["scale"] == 65536.0
    model2, opt2, sched2 = _parts()
    ckpt.load_checkpoint(saved, model2, opt2, sched2, scaler=fresh)
    assert fresh.state_dict() == TRAINED


def test_runs_without_a_scaler_write_none(tmp_path):
    model, opt, sched = _parts()
    saved = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    assert not (saved / "scaler.pt").exists()


def test_fp16_resume_from_a_checkpoint_without_scaler_state_is_refused(tmp_path):
    model, opt, sched = _parts()
    saved = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    with pytest.raises(RuntimeError, match="no scaler.pt"):
        ckpt.load_checkpoint(saved, model, opt, sched, scaler=_scaler())
