"""Issue 16: a JSONL file whose last line is truncated stopped both `tunesmith train` and `tunesmith
prepare` with `file:N: invalid JSON` although the config said `data.on_error: skip`."""

from __future__ import annotations

import json

import pytest

from tunesmith.api import prepare
from tunesmith.errors import DataError
from tunesmith.train.run import train

pytestmark = pytest.mark.integration
TRUNCATED = '{"question": "broken row", "answer": '


@pytest.fixture
def truncated(tmp_path, alpaca64):
    p = tmp_path / "in" / "train.jsonl"
    p.parent.mkdir()
    p.write_text(alpaca64.read_text() + TRUNCATED + "\n", encoding="utf-8")
    return p  # 64 good rows, line 65 cut off


def test_train_skips_the_truncated_line_and_reports_it(truncated, tiny_dir, tmp_path):
    ov = [f"model.path={tiny_dir}", f"data.train={truncated}", "data.max_length=96", "train.precision=fp32",
          "train.max_steps=1", "train.micro_batch_size=4", "train.save_every=0", "train.progress=false",
          "adapter.r=4", f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(DataError, match=rf"{truncated}:65: invalid JSON"):
        train(None, ov)
    summary = train(None, ov + ["data.on_error=skip"], overwrite=True)
    note = next(n for n in summary["notes"] if n.startswith("skipped 1 of 65 rows"))
    assert f"{truncated}:65: invalid JSON" in note
    assert summary["data"]["examples"]["count"] == 64
    assert f"{truncated}:65: invalid JSON" in (tmp_path / "run" / "report.md").read_text()


def test_prepare_skips_the_truncated_line_and_counts_it(truncated, tmp_path):
    with pytest.raises(DataError, match=rf"{truncated}:65: invalid JSON"):
        prepare(None, ["prepare.progress=false"], input=[str(truncated)], out=tmp_path / "bad")
    m = prepare(None, ["data.on_error=skip", "prepare.progress=false"], input=[str(truncated)], out=tmp_path / "out")
    read = next(s for s in m["steps"] if s["step"] == "read + normalise")
    assert read["dropped"] == {"malformed row: invalid JSON": 1}
    assert read["examples"]["malformed row: invalid JSON"] == [f"{truncated}:65"]
    assert read["rows_in"] == 65
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"] <= 64
