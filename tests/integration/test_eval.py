"""`tunesmith eval` end to end on the tiny model (fp32, CPU): perplexity, a multiple-choice task, an
exact-match task and a JSON task, model (tiny base + a LoRA adapter) against its base, a pairwise
judge on a local OpenAI-compatible server, and the report with every section.

The adapter is a PEFT LoRA with random (non-zero) B, so the model and its base really differ and
every delta must be exactly model - base. The base's perplexity is re-computed here from plain
logits and must match the report's.
"""

from __future__ import annotations

import http.server
import json
import math
import threading

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.adapters import save_adapter
from tunesmith.cli import main
from tunesmith.data.encode import IGNORE_INDEX, encode_conversation
from tunesmith.data.formats import load_examples
from tunesmith.evaluate.report import SECTIONS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    save_adapter(peft, out)  # as `tunesmith train` saves it: with the sidecar naming the base's quantization
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")

    def jsonl(name, rows):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d / name

    mc = jsonl("mc.jsonl", [{"question": f"Which colour is {c}?", "choices": ["red", "blue", "green"], "answer": i}
                            for i, c in enumerate(["red", "blue", "green", "red"][:4]) if i < 3] +
               [{"question": "Which animal barks?", "choices": ["cat", "dog"], "answer": "1"}])
    em = jsonl("math.jsonl", [{"question": f"What is {a} plus {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
                              for a, b in [(1, 2), (3, 4), (10, 5)]])
    jsonl("json_rows.jsonl", [{"request": f"Give a JSON object with name {n}.", "schema": {"type": "object", "required": ["name"]}}
                              for n in ("Ann", "Bob", "Cy")])
    (d / "json_task.yaml").write_text("data: json_rows.jsonl\ntype: generate\nmetric: json\nprompt: '{request}'\n"
                                      "schema_field: schema\nmax_new_tokens: 12\n")
    questions = jsonl("questions.jsonl", [{"question": "Name a colour."}, {"question": "Say hi."}])
    return {"mc": mc, "em": em, "json": d / "json_task.yaml", "questions": questions}


class FakeJudge:
    """OpenAI-compatible /v1/chat/completions that prefers the longer answer (or ties)."""

    def __init__(self):
        self.calls = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
                outer.calls += 1
                a = prompt.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
                b = prompt.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
                verdict = "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
                body = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"Judged. {verdict}"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def _base_loss_by_hand(tiny_dir, data_file) -> float:
    """Mean -log p over assistant tokens, each conversation alone, plain logits."""
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    examples, _ = load_examples([str(data_file)], "auto", {}, "raise")
    total, count = 0.0, 0
    for ex in examples:
        enc = encode_conversation(ex, tok)
        ids, labels = torch.tensor([enc.input_ids]), torch.tensor(enc.labels)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        tgt = labels[1:]
        keep = tgt != IGNORE_INDEX
        total -= logp[keep].gather(-1, tgt[keep][:, None]).sum().item()
        count += int(keep.sum())
    return total / count


def test_eval_model_against_base_with_every_section(tiny_dir, adapter_dir, task_files, alpaca64, tmp_path, capsys):
    judge = FakeJudge()
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_dir), "--adapter", str(adapter_dir), "--base", str(tiny_dir),
            "--tasks", f"mc={task_files['mc']},gsm8k={task_files['em']},json={task_files['json']}",
            "--perplexity", str(alpaca64), "--judge", "pairwise", "--judge-questions", str(task_files["questions"]),
            "--judge-endpoint", judge.url, "--judge-model", "fake", "--out", str(out),
            "eval.max_new_tokens=24", "eval.batch_size=4"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    model, base = res["results"]["model"], res["results"]["base"]
    names = {"ppl:alpaca64.jsonl", "general:general_text.jsonl", "mc", "gsm8k", "json"}
    assert set(model) == set(base) == names
    assert model["mc"]["n"] == 4 and set(model["mc"]["scores"]) == {"acc", "acc_norm"}
    assert model["gsm8k"]["n"] == 3 and set(model["gsm8k"]["scores"]) == {"exact_match"}
    assert set(model["json"]["scores"]) == {"json_valid", "schema_match"}
    for side in (model, base):
        for r in side.values():
            assert all(0 <= v <= 1 for k, v in r["scores"].items() if k not in ("loss", "perplexity"))
    # the base's perplexity is the one computed by hand from plain logits
    loss = _base_loss_by_hand(tiny_dir, alpaca64)
    assert base["ppl:alpaca64.jsonl"]["scores"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert base["ppl:alpaca64.jsonl"]["scores"]["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    # the random adapter changes the model, and every delta is model - base
    assert model["ppl:alpaca64.jsonl"]["scores"]["loss"] != pytest.approx(loss, rel=1e-3)
    comp = {(c["task"], c["metric"]): c for c in res["comparison"]}
    assert {("mc", "acc"), ("gsm8k", "exact_match"), ("json", "json_valid"), ("general:general_text.jsonl", "perplexity")} <= set(comp)
    for (task, metric), c in comp.items():
        assert c["delta"] == pytest.approx(model[task]["scores"][metric] - base[task]["scores"][metric])
    # the pairwise judge saw each question twice (positions swapped) and its raw outputs are saved
    assert judge.calls == 4
    records = [json.loads(line) for line in (out / "judge.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["judge_output_model_first"].startswith("Judged.") for r in records)
    assert res["judge"]["pairwise"]["n"] == 2
    # every example is kept, and the report has every section, none of the run ones marked "Not run"
    assert sum(1 for _ in (out / "samples" / "model-gsm8k.jsonl").open()) == 3
    report = (out / "report.md").read_text()
    heads = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert heads == list(SECTIONS)
    body = {h: report.split(f"## {h}\n")[1].split("\n## ")[0] for h in SECTIONS}
    for h in ("Summary", "Perplexity", "Tasks", "Before / after", "LLM-as-judge"):
        assert "Not run" not in body[h], h
    assert "### mc" in body["Tasks"] and "| mc | acc |" in body["Before / after"]
    assert (out / "scores.png").stat().st_size > 1000
    # an existing eval is never clobbered without --overwrite
    before = (out / "report.md").read_text()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err and (out / "report.md").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or moved-aside dirs left


def test_eval_from_a_run_config_reports_training_signals(tiny_dir, adapter_dir, task_files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    import shutil

    shutil.copytree(adapter_dir, run / "adapter")
    rows = [{"step": s, "loss": 3.0 - 0.05 * s} for s in range(1, 31)] + [{"step": s, "eval_loss": v} for s, v in ((10, 2.0), (20, 1.5), (30, 1.9))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"path": str(tiny_dir)}, "output_dir": str(run),
                                   "eval": {"tasks": {"mc": str(task_files["mc"])}, "batch_size": 4}}))
    assert main(["eval", str(cfg)]) == 0
    res = json.loads((run / "eval" / "results.json").read_text())
    assert res["model"]["adapter"] == str(run / "adapter") and res["base"] is None
    assert res["training"]["overfitting"] is True and res["training"]["best_eval_step"] == 20
    report = (run / "eval" / "report.md").read_text()
    assert "**overfitting**" in report and "Not run: pass `--base PATH`" in report


def test_eval_input_errors_are_one_line(tiny_dir, task_files, tmp_path, capsys):
    assert main(["eval", "--tasks", f"mc={task_files['mc']}", "--out", str(tmp_path / "o")]) == 2
    assert "give a run CONFIG or --model PATH" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_dir), "--tasks", f"trivia={task_files['mc']}", "--out", str(tmp_path / "o")]) == 2
    assert "no built-in reader for 'trivia'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_dir), "--tasks", f"mc={task_files['mc']}", "--out", str(tmp_path / "o"),
                 "--judge", "pairwise", "--judge-questions", str(task_files["questions"]), "--judge-endpoint", "http://127.0.0.1:9/v1"]) == 2
    assert "pairwise` compares the model with its base; pass --base" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_dir), "--tasks", f"mc={task_files['mc']}", "--out", str(tmp_path / "o"),
                 "eval.pass_k=[1,5]"]) == 2
    assert "eval.num_samples` >= 5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_harness_results_fold_into_the_report(tiny_dir, adapter_dir, task_files, tmp_path, monkeypatch):
    """lm-evaluation-harness (the `harness` extra) on the tiny model + adapter and its base, offline,
    with a task YAML of our own pointing at a local file; its acc lands in results.json, in the
    before/after comparison and in the report."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks = tmp_path / "lm_tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(
        f"task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {task_files['mc']}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer | int}}\"\nmetric_list:\n  - metric: acc\n")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_dir), "--adapter", str(adapter_dir), "--base", str(tiny_dir),
                 "--harness", "tiny_mc", "--harness-include", str(tasks), "--out", str(out), "eval.general=false"]) == 0
    res = json.loads((out / "results.json").read_text())
    for side in ("model", "base"):
        acc = res["harness"][side]["scores"]["harness:tiny_mc"]["acc"]
        assert acc in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 questions
    assert any(c["task"] == "harness:tiny_mc" and c["metric"] == "acc" for c in res["comparison"])
    assert "| model | harness:tiny_mc | acc |" in (out / "report.md").read_text()


SHARED = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.slow
def test_real_humaneval_canonical_solutions_pass_and_stubs_fail():
    """On the real HumanEval file (../shared, skipped without it): every canonical solution passes in
    the sandbox and a `return None` stub passes none, so pass@1 measures the code, not the harness."""
    import gzip

    from tunesmith.evaluate.runner import humaneval_program
    from tunesmith.evaluate.sandbox import run_program
    from tunesmith.evaluate.tasks import load_task

    path = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    canonical = {r["task_id"]: r["canonical_solution"] for r in map(json.loads, gzip.open(path, "rt"))}
    task = load_task("humaneval", path)
    assert len(task.examples) == 164
    assert all(run_program(humaneval_program(ex, canonical[ex.id], chat=False), 20).passed for ex in task.examples)
    assert not any(run_program(humaneval_program(ex, "    return None\n", chat=False), 20).passed for ex in task.examples)
