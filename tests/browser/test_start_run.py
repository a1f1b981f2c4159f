"""A run started from the form: `tunesmith train` on the tiny model in the background, its page
following it, Stop (SIGINT: checkpoints and metrics kept), Resume (--resume) to the end, and the
finished run in the table. Slow: two train processes, each loading torch and the model."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.slow
STEPS = 120  # long enough that Stop lands mid-run on a fast machine too (a few steps/s here)


def _wait_status(page, status: str, timeout_s: float) -> None:
    page.wait_for_function(f"document.getElementById('run-status').textContent === {json.dumps(status)}",
                           timeout=timeout_s * 1000, polling=500)


def test_form_run_stops_resumes_finishes_and_is_listed(ui_server, page, tmp_path, tiny_dir, alpaca64, shot):
    runs = tmp_path / "runs"
    page.goto(ui_server(runs, allow_train=True) + "/new")
    page.wait_for_selector("#f-train-lr")
    assert not page.is_visible("#new-readonly")
    for field, value in {"name": "form-run", "model-path": str(tiny_dir), "data-train": str(alpaca64), "data-max_length": "128",
                         "adapter-r": "8", "train-max_steps": str(STEPS), "train-micro_batch_size": "4", "train-save_every": "2",
                         # 8 micro-batches a step: fewer steps/s, so Stop lands well before the end
                         "train-grad_accum_steps": "8",
                         "train-eval_every": "10", "train-lr": "0.002"}.items():
        page.fill(f"#f-{field}", value)
    page.select_option("#f-data-format", "alpaca")
    page.select_option("#f-train-precision", "fp32")
    page.fill("#f-extra_yaml", "data:\n  eval_fraction: 0.125\nmodel:\n  dtype: fp32\n")
    page.wait_for_function("document.getElementById('new-yaml').textContent.includes('eval_fraction')")
    page.click("#start-run")
    page.wait_for_url("**/runs/form-run")
    _wait_status(page, "running", 60)

    # Stop once a checkpoint exists (watched on disk: the page's 2 s refresh is too slow a trigger):
    # the run is interrupted, its checkpoints and metrics stay
    run = runs / "form-run"
    deadline = time.time() + 600
    while not list(run.glob("checkpoints/step-*")):
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    page.wait_for_function("!document.getElementById('stop-run').disabled", timeout=30_000)
    page.click("#stop-run")
    _wait_status(page, "interrupted", 120)
    stopped_at = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    assert 0 < stopped_at < STEPS and not (run / "report.md").exists()
    # a clean stop: SIGINT raised KeyboardInterrupt in train (not SIGTERM/SIGKILL after the grace period; those print nothing),
    # also when this test process, and so the dashboard, started with SIGINT ignored (`cmd &` in a script)
    from tunesmith.ui.train_child import STOPPED

    assert STOPPED in (runs / ".tunesmith-ui" / "jobs" / "form-run.log").read_text()

    page.wait_for_function("!document.getElementById('resume-run').disabled", timeout=30_000)
    page.click("#resume-run")
    _wait_status(page, "finished", 1200)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # resumed from its checkpoint: no step twice, none missing
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "report.md").is_file()
    # the page drew what the run logged
    page.wait_for_selector("#run-report h1")
    d = page.get_attribute('#chart-loss path[data-series="loss"]', "d")
    assert d.count("L") == STEPS - 1
    assert "resumed from" in page.inner_text("#run-log")
    shot(page, "run-from-form")

    page.goto(page.url.split("/runs/")[0] + "/")
    page.wait_for_selector('tr[data-run="form-run"][data-status="finished"]')
    cells = [td.inner_text() for td in page.query_selector_all('tr[data-run="form-run"] td')]
    assert cells[3:7] == ["sft", "tiny", "lora", f"{STEPS} / {STEPS}"]
    shot(page, "runs-table-after-form-run")
