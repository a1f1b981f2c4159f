"""The Data, Eval and Playground pages in headless Chromium: the highlighted token spans are exactly
the labels training computes, a regression is marked, and the playground streams answers from a live
`tunesmith serve` (base and adapter side by side), showing text before the answer is complete."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # serve_helpers

from tunesmith.data.encode import IGNORE_INDEX, encode_conversation  # noqa: E402
from tunesmith.data.formats import load_examples  # noqa: E402

ROWS_JS = """() => [...document.querySelectorAll('#data-rows .data-row')].map(r => ({
  index: +r.dataset.index,
  tokens: [...r.querySelectorAll('.tokens[data-segment="0"] span.tok')].map(s => [s.textContent, s.classList.contains('lab')]),
  highlighted: [...r.querySelectorAll('span.tok')].filter(s => getComputedStyle(s).backgroundColor !== 'rgba(0, 0, 0, 0)').length,
}))"""


def _check_rows(page, examples, tok, first: int, n: int) -> None:
    rows = page.evaluate(ROWS_JS)
    assert [r["index"] for r in rows] == list(range(first, first + n))
    for r in rows:
        enc = encode_conversation(examples[r["index"]], tok)
        assert [lab for _, lab in r["tokens"]] == [x != IGNORE_INDEX for x in enc.labels], r["index"]
        assert [t for t, _ in r["tokens"]] == [tok.decode([i]) for i in enc.input_ids]
        assert r["highlighted"] == sum(x != IGNORE_INDEX for x in enc.labels)  # drawn highlighted, not only classed


def test_data_view_highlights_exactly_the_labelled_tokens(ui_server, page, tmp_path, tiny_dir, tok, alpaca64, shot):
    runs = tmp_path / "runs"
    (runs / "sft").mkdir(parents=True)
    cfg = {"model": {"path": str(tiny_dir)}, "data": {"train": [str(alpaca64)], "max_length": 128}}
    (runs / "sft" / "config.yaml").write_text(yaml.safe_dump(cfg))
    examples, _ = load_examples([str(alpaca64)])
    page.goto(ui_server(runs) + "/data?path=sft/config.yaml")
    page.wait_for_selector('#data-rows[data-loaded="train:0"]')
    _check_rows(page, examples, tok, 0, 10)
    page.wait_for_selector("#data-hist svg rect.bar")
    counts = [int(b.get_attribute("data-count")) for b in page.query_selector_all("#data-hist rect.bar")]
    assert sum(counts) == 64
    assert "No row is dropped" in page.inner_text("#data-drops")
    shot(page, "data-view")
    page.click("#data-next")
    page.wait_for_selector('#data-rows[data-loaded="train:10"]')
    _check_rows(page, examples, tok, 10, 10)


def test_data_view_of_a_prepared_directory_shows_why_rows_were_dropped(ui_server, page, tmp_path, tiny_dir, tok):
    from tunesmith.api import prepare

    rows = [{"instruction": f"Say {w}.", "output": f"{w} {w}."} for w in ("red", "blue", "green", "cat", "dog", "sun")]
    rows += [rows[0], {"instruction": "What?", "output": "N/A"}]  # line 7: an exact duplicate; line 8: a placeholder
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = tmp_path / "runs"
    manifest = prepare(input=[str(src)], out=runs / "prepared", tokenizer=str(tiny_dir), overrides=["prepare.progress=false"])
    page.goto(ui_server(runs) + "/data?path=prepared")
    page.wait_for_selector('#data-rows[data-loaded="train:0"]')
    steps = page.inner_text("#prepare-steps")
    for s in manifest["steps"]:
        for reason, n in s["dropped"].items():
            assert f"{n} × {reason}" in steps
    assert "in.jsonl:7" in steps and "in.jsonl:8" in steps
    assert len(page.query_selector_all("#data-rows .data-row")) == manifest["splits"]["train"] == 6
    labelled = {"".join(t for t, lab in r["tokens"] if lab) for r in page.evaluate(ROWS_JS)}
    assert labelled == {f"{r['output']}<|im_end|>" for r in rows[:6]}  # each kept answer, and only the answers


def test_data_view_says_what_is_wrong(ui_server, page, tmp_path):
    runs = tmp_path / "runs"
    (runs / "half" / "train").mkdir(parents=True)
    (runs / "half" / "train" / "state.json").write_text("{}")
    page.goto(ui_server(runs) + "/data?path=half")
    page.wait_for_selector("#data-error:not([hidden])")
    assert "manifest.json: missing" in page.inner_text("#data-error") and "tunesmith prepare" in page.inner_text("#data-error")


def _eval_results() -> dict:
    """gsm8k exact_match 0.40 vs base 0.50 is a regression (threshold 0.02); arc acc 0.70 vs 0.60 is better."""
    recs = lambda side, right: [{"id": i, "prompt": f"Question {i}?", "answer": f"{side} says {i}", "target": str(i),  # noqa: E731
                                 "exact_match": float(i < right)} for i in range(10)]
    model = {"gsm8k": {"name": "gsm8k", "metric": "exact_match", "source": "g.jsonl", "n": 10, "scores": {"exact_match": 0.4},
                       "records": recs("tuned", 4)},
             "arc": {"name": "arc", "metric": "acc", "source": "a.jsonl", "n": 10, "scores": {"acc": 0.7}, "records": []}}
    base = {"gsm8k": {**model["gsm8k"], "scores": {"exact_match": 0.5}, "records": recs("base", 5)},
            "arc": {**model["arc"], "scores": {"acc": 0.6}}}
    judged = lambda side, ratings: {"scores": {"rating": sum(ratings) / 2, "unparsed": 0}, "n": 2, "records": [  # noqa: E731
        {"question": q, "answer": f"{side} on {q}", "rating": r, "judge_output": f"Fine. [[{r:g}]]"} for q, r in zip(("Why?", "How?"), ratings)]}
    return {"model": {"label": "model", "path": "tiny", "adapter": "run/adapter"}, "base": {"label": "base", "path": "tiny", "adapter": ""},
            "config": {"regression_threshold": 0.02}, "results": {"model": model, "base": base},
            "judge": {"judge": "local judge", "mode": "single", "model": judged("tuned", [8, 7]), "base": judged("base", [6, 7])}}


def test_eval_view_marks_the_regression(ui_server, page, tmp_path, shot):
    from tunesmith.evaluate.report import write_outputs

    runs = tmp_path / "runs"
    out = runs / "evals" / "e1"
    out.mkdir(parents=True)
    write_outputs(out, _eval_results())
    page.goto(ui_server(runs) + "/eval?dir=evals/e1")
    page.wait_for_selector("#eval-view[data-loaded] .sample")
    marked = {(r.get_attribute("data-task"), r.get_attribute("data-metric")): r
              for r in page.query_selector_all('#eval-table tr[data-regression="true"]')}
    assert set(marked) == {("gsm8k", "exact_match")}
    assert "REGRESSION" in marked[("gsm8k", "exact_match")].inner_text()
    better = page.query_selector('#eval-table tr[data-task="arc"]')
    assert better.get_attribute("data-regression") == "false" and "better" in better.inner_text()
    assert "1 regression past the threshold" in page.inner_text("#eval-verdict")
    first = page.query_selector('.sample[data-index="0"]')
    assert "tuned says 0" in first.inner_text() and "base says 0" in first.inner_text()
    judge = page.inner_text("#judge-table")
    assert "tuned on Why?" in judge and "rating 8" in judge and "base on Why?" in judge and "rating 6" in judge
    judge_row = page.query_selector('#eval-table tr[data-task="judge"]')  # the judge's mean rating 7.5 vs 6.5: better
    assert judge_row.get_attribute("data-regression") == "false" and "better" in judge_row.inner_text()
    shot(page, "eval-view")
    page.fill("#eval-threshold", "0.2")  # 10 points is inside 20: no regression
    page.click("#eval-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#eval-table tr[data-regression=\"true\"]').length === 0")


KEY = "sk-browser-playground"


@pytest.fixture(scope="module")
def live_serve(tiny_dir, tmp_path_factory):
    pytest.importorskip("fastapi")
    from serve_helpers import make_lora, running

    from tunesmith.serve import ServeOptions, build_app
    from tunesmith.serve.loading import Target

    adapter = make_lora(tiny_dir, tmp_path_factory.mktemp("pg") / "tuned", seed=3, targets=["q_proj", "v_proj"])
    app, service = build_app(Target(base=tiny_dir, adapters={"tuned": adapter}, name="tiny"), ServeOptions(api_key=KEY, max_tokens=64))
    with running(app, service) as url:
        yield url


@pytest.mark.integration
def test_playground_streams_base_and_adapter_side_by_side(ui_server, page, tmp_path, live_serve, shot):
    from serve_helpers import post

    prompt = "Add 2 and 3."
    want = {}
    for model in ("tiny", "tuned"):
        status, body = post(live_serve + "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                                                   "max_tokens": 16, "temperature": 0}, key=KEY)
        assert status == 200
        want[model] = body["choices"][0]["message"]["content"]
    assert want["tiny"] != want["tuned"]
    seen = []
    page.on("response", lambda r: seen.append(r))
    page.goto(ui_server(tmp_path / "runs", serve_url=live_serve, serve_key=KEY) + "/playground")
    page.wait_for_selector("body[data-models]")
    assert page.get_attribute("body", "data-models") == "tiny,tuned"
    page.check("#pg-side")
    page.select_option("#pg-model-a", "tiny")
    page.select_option("#pg-model-b", "tuned")
    page.fill("#pg-max-tokens", "16")
    page.fill("#pg-message", prompt)
    page.click("#pg-send")
    # generous: on a quiet machine this takes seconds; on a shared 2-core one tokens come at ~1/s
    page.wait_for_selector('#col-a[data-state="done"]', timeout=300_000)
    page.wait_for_selector('#col-b[data-state="done"]', timeout=300_000)
    for col, model in (("#col-a", "tiny"), ("#col-b", "tuned")):
        assert page.get_attribute(col, "data-model") == model
        assert page.eval_on_selector(f"{col} .turn.assistant", "e => e.textContent") == want[model]
        assert int(page.get_attribute(col, "data-updates")) > 1  # appended piece by piece, not once at the end
    shot(page, "playground")
    # the key went to the server only: no page, script or API answer carries it
    assert KEY not in page.content()
    # (Chromium keeps no copy of a streamed body; what streams is the models' tokens)
    read = {r.url.split("/", 3)[-1]: r.text() for r in seen if r.ok and "event-stream" not in r.headers.get("content-type", "")}
    assert {"playground", "api/playground/models", "static/playground.js"} <= set(read)
    assert not any(KEY in body for body in read.values())


class _GatedServe(BaseHTTPRequestHandler):
    """One model; the answer's first piece is sent at once, the rest only after the test opens the gate."""

    gate = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        raw = json.dumps({"object": "list", "data": [{"id": "slow", "parent": None}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def send(piece, finish=None):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece} if piece else {}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        send("first half, ")
        _GatedServe.gate.wait(60)
        send("second half")
        send(None, "stop")
        self.wfile.write(b"data: [DONE]\n\n")


def test_playground_shows_tokens_before_the_answer_ends(ui_server, page, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GatedServe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _GatedServe.gate.clear()
    try:
        page.goto(ui_server(tmp_path / "runs", serve_url=f"http://127.0.0.1:{server.server_address[1]}") + "/playground")
        page.wait_for_selector("body[data-models]")
        page.fill("#pg-message", "hello")
        page.click("#pg-send")
        page.wait_for_function("() => (document.querySelector('#col-a .turn.assistant') || {}).textContent === 'first half, '")
        assert page.get_attribute("#col-a", "data-state") == "streaming"  # shown while the server still holds the rest
        _GatedServe.gate.set()
        page.wait_for_selector('#col-a[data-state="done"]')
        assert page.eval_on_selector("#col-a .turn.assistant", "e => e.textContent") == "first half, second half"
    finally:
        _GatedServe.gate.set()
        server.shutdown()


def test_playground_without_a_server_says_how_to_start_one(ui_server, page, tmp_path):
    from serve_helpers import free_port

    page.goto(ui_server(tmp_path / "runs", serve_url=f"http://127.0.0.1:{free_port()}", serve_key=KEY) + "/playground")
    page.wait_for_selector("#pg-error:not([hidden])")
    text = page.inner_text("#pg-error")
    assert "cannot reach tunesmith serve" in text and "--serve-url" in text and KEY not in text
