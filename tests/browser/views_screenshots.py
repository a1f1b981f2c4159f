"""Regenerate docs/img/ui-{data,eval,playground}.png in headless Chromium. Not a test:

    PYTHONPATH=src nice -n 19 python tests/browser/views_screenshots.py [MODEL_DIR [DATA.jsonl]]

The data page shows gsm8k through SmolLM2-135M-Instruct's template by default (/tmp/smollm2, made
by `tunesmith convert smollm2-135m-instruct /tmp/smollm2`; only its tokenizer is read); the eval page
a fixture eval directory written by the eval's own writer; the playground the tiny model and a
random LoRA on it, served by `tunesmith serve`'s app, as in the browser test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integration")]  # this conftest, serve_helpers

import yaml  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS, ServerThread  # noqa: E402
from docs_screenshots import OUT, save  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from serve_helpers import make_lora, running  # noqa: E402
from test_views_pages import _eval_results  # noqa: E402

from tunesmith.ui import create_app  # noqa: E402

MODEL = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smollm2")
DATA = Path(sys.argv[2] if len(sys.argv) > 2 else HERE.parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl")


def fixtures(tmp: Path) -> Path:
    from tunesmith.evaluate.report import write_outputs

    runs = tmp / "runs"
    (runs / "gsm8k-sft").mkdir(parents=True)
    cfg = {"model": {"path": str(MODEL)}, "data": {"train": [str(DATA)], "format": "alpaca",
           "columns": {"instruction": "question", "output": "answer"}, "max_length": 512}}
    (runs / "gsm8k-sft" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (runs / "evals" / "sft-vs-base").mkdir(parents=True)
    write_outputs(runs / "evals" / "sft-vs-base", _eval_results())
    return runs


def main() -> None:
    from tunesmith.models.tiny import init_model
    from tunesmith.serve import ServeOptions, build_app
    from tunesmith.serve.loading import Target

    tmp = Path(tempfile.mkdtemp(prefix="ui-views-docs-"))
    runs = fixtures(tmp)
    tiny = init_model(tmp / "tiny", size="tiny", seed=0)
    adapter = make_lora(tiny, tmp / "tuned", seed=3, targets=["q_proj", "v_proj"])
    app, service = build_app(Target(base=tiny, adapters={"tuned": adapter}, name="tiny"), ServeOptions(max_tokens=64))
    with running(app, service) as serve_url, sync_playwright() as pw:
        ui = ServerThread(create_app(runs, serve_url=serve_url))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(600_000)
        page.goto(ui.url + "/data?path=gsm8k-sft/config.yaml")
        page.wait_for_selector("#data-hist svg rect.bar")
        save(page, "ui-data", 1500, tmp)
        page.goto(ui.url + "/eval?dir=evals/sft-vs-base")
        page.wait_for_selector("#judge-table")
        save(page, "ui-eval", 1900, tmp)
        page.goto(ui.url + "/playground")
        page.wait_for_selector("body[data-models]")
        page.check("#pg-side")
        page.fill("#pg-max-tokens", "16")
        page.fill("#pg-message", "Add 2 and 3.")
        page.click("#pg-send")
        page.wait_for_selector('#col-b[data-state="done"]')
        page.wait_for_selector('#col-a[data-state="done"]')
        save(page, "ui-playground", 600, tmp)
        browser.close()
        ui.stop()
    print(f"wrote ui-data.png, ui-eval.png, ui-playground.png in {OUT}")


if __name__ == "__main__":
    main()
