"""Issue 16: `merge --config` reported "probe logits finite" even when no tokenizer was there and the
probe forward was skipped; the summary and the report now say what was really checked."""

import shutil

import yaml

from tunesmith.api import merge


def _merge(tmp_path, src, name):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"method": "linear", "models": [{"path": str(src), "weight": 1.0}]}))
    return merge(tmp_path / name, config=cfg)


def test_probe_claim_matches_what_was_checked(tiny_dir, tmp_path):
    with_tok = _merge(tmp_path, tiny_dir, "with")
    assert with_tok["probe_checked"] and with_tok["verified"].endswith("probe logits finite")
    bare = tmp_path / "bare"  # the same weights without tokenizer files
    bare.mkdir()
    for f in tiny_dir.iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy2(f, bare / f.name)
    s = _merge(tmp_path, bare, "without")
    assert not s["probe_checked"] and "probe logits finite" not in s["verified"]
    assert "logits not checked (no tokenizer" in s["verified"]
    report = (tmp_path / "without" / "report.md").read_text()
    assert "logits on probe inputs are finite" not in report and "The logits were not checked" in report
