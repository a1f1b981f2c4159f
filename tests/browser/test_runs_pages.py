"""The runs table and a run's page in headless Chromium, over run directories in train's own format."""

from __future__ import annotations

import json
import math
import re

import pytest

from ui_runs import write_run


def test_runs_table_lists_every_run_and_shows_a_damaged_one(ui_server, page, tmp_path, shot):
    runs = tmp_path / "runs"
    write_run(runs, "sft-a")
    write_run(runs, "group/dpo-b", method="dpo", steps=12)
    write_run(runs, "broken", finished=False, extra_lines=['{"step": 99, "loss": 1.0\n', '{"step": 100, "loss": 0.9}\n'])
    url = ui_server(runs)
    page.goto(url + "/")
    page.wait_for_selector('tr[data-run="broken"]')
    rows = {r.get_attribute("data-run"): r for r in page.query_selector_all("#runs-table tbody tr")}
    assert set(rows) == {"sft-a", "group/dpo-b", "broken"}
    assert rows["sft-a"].get_attribute("data-status") == "finished"
    cells = [c.inner_text() for c in rows["group/dpo-b"].query_selector_all("td")]
    assert cells[3:7] == ["dpo", "tiny", "lora", "12 / 12"]
    # the truncated line is named with its line number; the run is still listed with its good steps
    assert "metrics.jsonl:21: not JSON" in rows["broken"].inner_text()
    assert rows["broken"].query_selector_all("td")[6].inner_text() == "100 / 20"
    shot(page, "runs-table")


def _path_vertices(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+) (-?[\d.]+)", d)]


def test_run_page_draws_the_loss_curve_from_metrics(ui_server, page, tmp_path, shot):
    runs = tmp_path / "runs"
    run = write_run(runs, "sft-a", steps=20)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    page.goto(ui_server(runs) + "/runs/sft-a")
    page.wait_for_selector('#chart-loss path[data-series="loss"]')
    svg = page.query_selector("#chart-loss svg")
    a = {k: float(svg.get_attribute(f"data-{k}")) for k in ("xmin", "xmax", "ymin", "ymax", "left", "top", "plot-w", "plot-h")}
    assert svg.get_attribute("data-log-y") == "true"
    for key in ("loss", "eval_loss"):
        d = page.query_selector(f'#chart-loss path[data-series="{key}"]').get_attribute("d")
        got = _path_vertices(d)
        want = [(a["left"] + (r["step"] - a["xmin"]) / (a["xmax"] - a["xmin"]) * a["plot-w"],
                 a["top"] + a["plot-h"] - (math.log10(r[key]) - a["ymin"]) / (a["ymax"] - a["ymin"]) * a["plot-h"])
                for r in records if key in r]
        assert len(got) == len(want) == (20 if key == "loss" else 4)
        assert all(abs(g[0] - w[0]) < 0.01 and abs(g[1] - w[1]) < 0.01 for g, w in zip(got, want)), (got, want)
    # every other numeric key gets its own chart; counters do not
    charts = {el.get_attribute("data-chart") for el in page.query_selector_all("[data-chart]")}
    assert charts == {"chart-loss", "chart-lr", "chart-grad_norm", "chart-tokens_per_s"}
    assert "step-20" in page.inner_text("#checkpoints")
    assert "method: sft" in page.inner_text("#run-config")
    page.wait_for_selector("#run-report h1")
    img = page.query_selector("#run-report img")
    assert img.get_attribute("src") == "/api/run-file/sft-a?file=loss.png"
    assert page.evaluate("el => el.complete && el.naturalWidth > 0", img)  # the image was served and decoded
    shot(page, "run-page")


def test_run_page_follows_a_live_run(ui_server, page, tmp_path):
    """New lines in metrics.jsonl extend the curves without a reload; a torn last line waits for its end."""
    from tunesmith.train.metrics import MetricsLog
    from ui_runs import curve

    runs = tmp_path / "runs"
    records = curve(12)
    run = write_run(runs, "live", finished=False, records=records[:5])
    page.goto(ui_server(runs) + "/runs/live")
    page.wait_for_selector('#chart-loss path[data-series="loss"]')
    count = 'document.querySelector(\'#chart-loss path[data-series="loss"]\').getAttribute("d").split("L").length'
    assert page.evaluate(count) == 5
    assert page.inner_text("#run-status") == "running"
    with MetricsLog(run / "metrics.jsonl") as log:
        for r in records[5:9]:
            log.log(r)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "loss": 1.')  # a write in progress
    page.wait_for_function(f"{count} === 9", timeout=20_000)
    assert page.query_selector("#run-problems .error-box") is None  # a torn tail is not a problem


def test_hovering_a_chart_shows_the_values_at_that_step(ui_server, page, tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "a", steps=20, full_report=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    page.goto(ui_server(runs) + "/runs/a")
    svg = page.wait_for_selector("#chart-lr svg")
    left, width = float(svg.get_attribute("data-left")), float(svg.get_attribute("data-plot-w"))
    # step 10 of 1..20 lies at 9/19 of the plot's width
    page.hover("#chart-lr rect.overlay", position={"x": width * 9 / 19, "y": 20})
    tip = page.wait_for_selector("#chart-lr text.tip[visibility=visible]")
    lines = [t.text_content() for t in tip.query_selector_all("tspan")]
    assert lines[0] == "step 10"
    mantissa, exponent = f"{records[9]['lr']:.2e}".split("e")  # TS.fmt: JavaScript's toExponential(2), 5.24e-4
    assert lines[1] == f"lr: {mantissa}e{int(exponent)}"
    assert float(page.get_attribute("#chart-lr line.hover", "x1")) == pytest.approx(left + width * 9 / 19, abs=0.01)
