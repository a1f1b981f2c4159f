"""Regenerate docs/img/ui-{runs,run,compare,start}.png from fixture runs in train's own format
(tests/ui_runs.py), in headless Chromium; palette PNGs keep them small. Not a test:

    PYTHONPATH=src nice -n 19 python tests/browser/docs_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this conftest (not tests/conftest.py), then ui_runs

from conftest import CHROMIUM, CHROMIUM_ARGS, ServerThread  # noqa: E402
from PIL import Image  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from ui_runs import curve, write_run  # noqa: E402

from tunesmith.ui import create_app  # noqa: E402

OUT = HERE.parents[1] / "docs" / "img"


def make_runs(runs: Path) -> None:
    write_run(runs, "sft-lr1e-3", steps=40, records=curve(40, rate=0.08))
    write_run(runs, "sft-lr5e-4", steps=40, lr=5e-4, records=curve(40, start=3.1, rate=0.05, seed=1))
    dpo = curve(30, start=0.7, rate=0.06)
    for r in dpo:  # the keys the preference objectives log
        s = r["step"]
        r.update({"rewards/chosen": 0.02 * s, "rewards/rejected": -0.015 * s, "rewards/margin": 0.035 * s,
                  "rewards/accuracy": min(1.0, 0.5 + 0.02 * s), "logps/chosen": -40 + 0.2 * s})
    write_run(runs, "dpo-beta0.1", steps=30, method="dpo", records=dpo)
    write_run(runs, "sft-live", steps=60, finished=False, records=curve(60)[:23])
    write_run(runs, "broken", steps=20, finished=False, extra_lines=['{"step": 21, "loss": 0.9\n'])
    old = time.time() - 3600  # an hour without a write: interrupted
    for p in [runs / "broken", *(runs / "broken").rglob("*")]:
        os.utime(p, (old, old))


def save(page, name: str, height: int, tmp: Path) -> None:
    page.set_viewport_size({"width": 1280, "height": height})
    page.screenshot(path=str(tmp / f"{name}.png"))
    image = Image.open(tmp / f"{name}.png").convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    image.save(OUT / f"{name}.png", optimize=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ui-docs-"))
    make_runs(tmp / "runs")
    server = ServerThread(create_app(tmp / "runs", allow_train=True))
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_selector('tr[data-run="broken"]')
        save(page, "ui-runs", 430, tmp)
        page.goto(server.url + "/runs/dpo-beta0.1")
        page.wait_for_selector("#chart-rewards_margin path")
        save(page, "ui-run", 1000, tmp)
        page.goto(server.url + "/compare?runs=sft-lr1e-3&runs=sft-lr5e-4")
        page.wait_for_selector("#config-diff tbody tr")
        save(page, "ui-compare", 1000, tmp)
        page.goto(server.url + "/new")
        page.wait_for_selector("#f-train-lr")
        for field, value in {"name": "sft-lr1e-3", "model-path": "models/tiny", "data-train": "data/alpaca.jsonl",
                             "train-lr": "-1e-4", "train-warmup_steps": "10", "extra_yaml": "train:\n  warmup_ratio: 0.1\n"}.items():
            page.fill(f"#f-{field}", value)
        page.wait_for_function("document.getElementById('err-f-train-lr').textContent.length > 0")
        save(page, "ui-start", 900, tmp)
        browser.close()
    server.stop()
    print(f"wrote {', '.join(sorted(p.name for p in OUT.glob('ui-*.png')))} in {OUT}")


if __name__ == "__main__":
    main()
