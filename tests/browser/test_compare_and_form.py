"""Compare overlays runs; the start-a-run form shows the schema's errors beside their fields."""

from __future__ import annotations

import re

from ui_runs import write_run


def test_compare_overlays_two_runs_and_diffs_their_configs(ui_server, page, tmp_path, shot):
    runs = tmp_path / "runs"
    write_run(runs, "lr-1e-3", steps=20)
    write_run(runs, "lr-5e-4", steps=30, lr=5e-4)
    page.goto(ui_server(runs) + "/compare?runs=lr-1e-3&runs=lr-5e-4")
    page.wait_for_selector('#chart-loss path[data-series="lr-5e-4 · loss"]')
    paths = {p.get_attribute("data-series"): p.get_attribute("d") for p in page.query_selector_all("#chart-loss path.series")}
    assert set(paths) == {"lr-1e-3 · loss", "lr-1e-3 · eval_loss", "lr-5e-4 · loss", "lr-5e-4 · eval_loss"}
    xs = {k: [float(x) for x in re.findall(r"[ML](-?[\d.]+) ", d)] for k, d in paths.items()}
    assert len(xs["lr-1e-3 · loss"]) == 20 and len(xs["lr-5e-4 · loss"]) == 30
    # one x axis for both: the 20-step run ends two thirds of the way along the 30-step one
    svg = page.query_selector("#chart-loss svg")
    left, width = float(svg.get_attribute("data-left")), float(svg.get_attribute("data-plot-w"))
    assert abs(xs["lr-5e-4 · loss"][-1] - (left + width)) < 0.01
    assert abs(xs["lr-1e-3 · loss"][-1] - (left + width * 19 / 29)) < 0.01
    rows = page.query_selector_all("#config-diff tbody tr")
    cells = [[td.inner_text() for td in r.query_selector_all("td")] for r in rows]
    assert cells == [["train.lr", "0.001", "0.0005"], ["train.max_steps", "20", "30"]]
    shot(page, "compare")


def test_form_shows_errors_beside_fields_and_read_only_refuses(ui_server, page, tmp_path, shot):
    runs = tmp_path / "runs"
    write_run(runs, "taken", full_report=False)
    page.goto(ui_server(runs) + "/new")
    page.wait_for_selector("#f-train-lr")
    assert page.is_visible("#new-readonly") and page.is_disabled("#start-run")
    page.fill("#f-name", "taken")
    page.fill("#f-model-path", "/models/tiny")
    page.fill("#f-train-lr", "-1")
    page.select_option("#f-adapter-type", "ia3")
    page.fill("#f-adapter-r", "8")
    page.wait_for_function("document.getElementById('err-f-train-lr').textContent.length > 0")
    err = lambda field: page.inner_text(f"#err-f-{field}")  # noqa: E731
    assert err("train-lr") == "`train.lr` = -1.0: Input should be greater than 0"
    assert "already exists" in err("name")
    assert "applies to adapter.type lora / dora, not ia3" in err("adapter-r")
    assert err("train-max_steps") == ""
    assert page.eval_on_selector("[data-field='train.lr']", "el => el.classList.contains('invalid')")
    assert "lr: -1.0" in page.inner_text("#new-yaml")
    shot(page, "start-form")
    page.fill("#f-train-lr", "0.001")  # fixed: its error goes, the others stay
    page.wait_for_function("document.getElementById('err-f-train-lr').textContent === ''")
    assert "not ia3" in err("adapter-r")
