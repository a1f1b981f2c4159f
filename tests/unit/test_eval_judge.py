"""LLM-as-judge against a tiny OpenAI-compatible server on 127.0.0.1: verdict and rating parsing,
pairwise judging asks twice with the positions swapped, and a judge that always prefers the first
position ends up with ties only (its bias cancels) while a judge that prefers the better answer
gives wins. Every raw judge output is kept."""

import http.server
import json
import threading

import pytest

from tunesmith.errors import UserError
from tunesmith.evaluate.judge import (OpenAIJudge, compare_pairwise, grade_single, load_prompt, parse_rating,
                                      parse_verdict)


class FakeOpenAI:
    """Answers POST /v1/chat/completions like the OpenAI chat API with `policy(prompt) -> text`."""

    def __init__(self, policy):
        self.prompts: list[str] = []
        self.auth: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                outer.prompts.append(prompt)
                outer.auth.append(self.headers.get("Authorization", ""))
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": policy(prompt)},
                                                "finish_reason": "stop"}]}).encode()
                self.send_response(200 if self.path == "/v1/chat/completions" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _answer_a(prompt: str) -> str:
    return prompt.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]


def test_parse_rating_and_verdict():
    assert parse_rating("Good.\nRating: [[7]]") == 7.0
    assert parse_rating("[[3]] at first, finally [[8.5]]") == 8.5
    assert parse_rating("Rating: 6") == 6.0
    assert parse_rating("[[11]] is out of range") is None and parse_rating("no rating") is None
    assert parse_verdict("A is better. [[A]]") == "A" and parse_verdict("[[B]] ... final [[C]]") == "C"
    assert parse_verdict("A is better") is None


QS, MINE, BASE = ["q1", "q2", "q3"], ["good answer 1", "good answer 2", "bad answer 3"], ["bad 1", "bad 2", "good 3"]


def test_pairwise_swaps_positions_and_cancels_a_position_bias(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    template = load_prompt("pairwise")
    with FakeOpenAI(lambda p: "First is better. [[A]]") as url:
        judge = OpenAIJudge(url, "judge-model", api_key_env="TEST_JUDGE_KEY")
        biased = compare_pairwise(judge, QS, MINE, BASE, template)
    assert biased["scores"] == {"win_rate": 0.0, "loss_rate": 0.0, "tie_rate": 1.0, "inconsistent": 3}
    assert all(r["judge_output_model_first"] == "First is better. [[A]]" for r in biased["records"])


def test_pairwise_judge_that_reads_the_answers():
    template = load_prompt("pairwise")
    fake = FakeOpenAI(lambda p: "[[A]]" if "good" in _answer_a(p) else "[[B]]")
    with fake as url:
        out = compare_pairwise(OpenAIJudge(url, "m"), QS, MINE, BASE, template)
    # 6 requests: each question twice, the model's answer first in A, then in B.
    assert len(fake.prompts) == 6
    for i in range(3):
        assert _answer_a(fake.prompts[2 * i]) == MINE[i] and _answer_a(fake.prompts[2 * i + 1]) == BASE[i]
    assert [r["outcome"] for r in out["records"]] == ["win", "win", "loss"]
    assert out["scores"]["win_rate"] == pytest.approx(2 / 3) and out["scores"]["inconsistent"] == 0


def test_single_grading_with_reference_and_auth(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    template = load_prompt("single")
    fake = FakeOpenAI(lambda p: "Fine. Rating: [[8]]" if "good" in p.split("[The Start of Assistant's Answer]")[1] else "Poor. [[2]]")
    with fake as url:
        out = grade_single(OpenAIJudge(url, "m", api_key_env="TEST_JUDGE_KEY"), QS, MINE, template, references=["r1", "", ""])
    assert [r["rating"] for r in out["records"]] == [8.0, 8.0, 2.0]
    assert out["scores"] == {"rating": pytest.approx(6.0), "unparsed": 0}
    assert "[Reference Answer]\nr1" in fake.prompts[0] and "[Reference Answer]" not in fake.prompts[1]
    assert fake.auth[0] == "Bearer sk-test"
    assert out["records"][2]["judge_output"] == "Poor. [[2]]"


def test_unreachable_endpoint_is_a_user_error():
    with pytest.raises(UserError, match="unreachable"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m", timeout_s=2)("hi")


def test_user_prompt_files_replace_the_builtin(tmp_path):
    (tmp_path / "judge_single.txt").write_text("Rate {answer} for {question}{reference_note}{reference_block}")
    assert load_prompt("single", tmp_path).startswith("Rate {answer}")
    with pytest.raises(UserError, match="judge_pairwise.txt"):
        load_prompt("pairwise", tmp_path)


def test_local_model_judge_keeps_unparsable_outputs(tiny_dir):
    """An untrained local judge does not write `Rating: [[N]]`: its ratings are None, counted as
    unparsed (not as zeros), and its raw outputs are kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.evaluate.judge import LocalJudge

    judge = LocalJudge(AutoModelForCausalLM.from_pretrained(tiny_dir).eval(), AutoTokenizer.from_pretrained(tiny_dir), max_new_tokens=8)
    out = grade_single(judge, QS[:2], MINE[:2], load_prompt("single"))
    assert all(isinstance(r["judge_output"], str) and r["judge_output"] for r in out["records"])
    parsed = [parse_rating(r["judge_output"]) for r in out["records"]]
    assert [r["rating"] for r in out["records"]] == parsed
    assert out["scores"]["unparsed"] == sum(p is None for p in parsed)
