"""The code sandbox of pass@k: tests that pass pass, failing ones fail, an infinite loop is killed,
a network call fails (while the same call outside the sandbox succeeds), memory is capped."""

import http.server
import threading
import time

import pytest

from tunesmith.evaluate.runner import humaneval_program
from tunesmith.evaluate.sandbox import run_program
from tunesmith.evaluate.tasks import Example


def test_passing_and_failing_programs():
    assert run_program("assert sum([1, 2]) == 3\n", timeout_s=20).status == "passed"
    bad = run_program("assert sum([1, 2]) == 4, 'wrong sum'\n", timeout_s=20)
    assert bad.status == "failed" and not bad.passed and "wrong sum" in bad.detail


def test_infinite_loop_is_killed():
    start = time.monotonic()
    out = run_program("while True:\n    pass\n", timeout_s=2)
    assert out.status == "timeout" and not out.passed
    assert time.monotonic() - start < 15


def test_child_processes_cannot_be_started_or_outlive_the_timeout(tmp_path):
    """Spawning, forking, os.system, ctypes and deleting files by path fail (HumanEval's reliability
    guard), and the user's file survives; a busy loop still dies on the wall-clock timeout."""
    victim = tmp_path / "keep.txt"
    victim.write_text("mine")
    for prog in ("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'pass'])\n",
                 "import os\nos.fork()\n", "import os\nos.system('true')\n",
                 f"import os\nos.remove({str(victim)!r})\n", f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                 "import ctypes\n", "import multiprocessing\n"):
        out = run_program(prog, timeout_s=20)
        assert out.status == "failed", (prog, out)
    assert victim.read_text() == "mine"
    start = time.monotonic()
    assert run_program("while True: pass\n", timeout_s=2).status == "timeout"
    assert time.monotonic() - start < 15


@pytest.fixture()
def local_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reachable")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_network_call_is_blocked(local_server):
    fetch = f"import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{local_server}', timeout=5).read())\n"
    # The same code reaches the server outside the sandbox, so the check below can fail.
    import urllib.request

    assert urllib.request.urlopen(f"http://127.0.0.1:{local_server}", timeout=5).read() == b"reachable"
    out = run_program(fetch, timeout_s=20)
    assert out.status == "failed", out
    raw = run_program(f"import socket\ns = socket.create_connection(('127.0.0.1', {local_server}), timeout=5)\n", timeout_s=20)
    assert raw.status == "failed" and "network access is disabled" in raw.detail


def test_network_namespace_stops_code_that_bypasses_the_socket_patch(local_server):
    """`_socket` is the C module under `socket`: the preamble hides it, but code can un-hide it
    (del sys.modules[...]); the namespace stops that too."""
    from tunesmith.evaluate.sandbox import _can_unshare

    if not _can_unshare():
        pytest.skip("no user network namespaces here (unshare -rn); the socket patch is the only network block")
    prog = (f"import sys\ndel sys.modules['_socket']\nimport _socket\ns = _socket.socket()\ns.settimeout(5)\n"
            f"s.connect(('127.0.0.1', {local_server}))\n")
    assert run_program(prog, timeout_s=20, network_namespace=False).status == "passed"  # the bypass works without it
    out = run_program(prog, timeout_s=20)
    assert out.status == "failed" and ("refused" in out.detail.lower() or "unreachable" in out.detail.lower()), out


def test_flood_of_output_is_bounded():
    """stdout is discarded and stderr is a file capped at 16 MiB: printing 200 MB cannot fill our memory."""
    out = run_program("import sys\nsys.stderr.write('x' * 200_000_000)\n", timeout_s=20)
    assert not out.passed


def test_memory_is_capped():
    out = run_program("x = bytearray(1024 * 1024 * 1024)\n", timeout_s=20, memory_mb=256)
    assert out.status == "failed" and "MemoryError" in out.detail


HE = Example("HumanEval/x", "", target="add", code_prompt='def add(a, b):\n    """Sum."""\n',
             tests="def check(f):\n    assert f(2, 3) == 5\n\ncheck(add)\n")


@pytest.mark.parametrize("completion, passed", [
    ("    return a + b\n", True),  # raw completion of the body
    ("Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.", True),  # a fenced whole function
    ("    return a - b\n", False),
    ("```python\ndef add(a, b):\n    return a * b\n```", False),
])
def test_humaneval_program_assembly(completion, passed):
    assert run_program(humaneval_program(HE, completion, chat=True), timeout_s=20).passed is passed


def test_pass_at_k_over_several_samples(monkeypatch):
    """3 samples per problem, seeds 0, 1, 2; only the seed-1 sample is right: c = 1 of n = 3, so
    pass@1 = 1/3 and pass@3 = 1 - C(2,3)/C(3,3) = 1; each sample is run in the sandbox."""
    from tunesmith.evaluate import runner
    from tunesmith.evaluate.tasks import Task

    seeds = []

    def fake_generate(model, tokenizer, texts, max_new_tokens, **kw):
        seeds.append((kw["seed"], kw["do_sample"]))
        return ["    return a + b\n" if kw["seed"] == 1 else "    return a - b\n" for _ in texts]

    monkeypatch.setattr(runner, "generate", fake_generate)
    task = Task("he", "generate", "pass_at_k", [HE], chat=False)
    out = runner.run_task(None, None, task, runner.GenOptions(num_samples=3, pass_k=(1, 3), progress=False, timeout_s=20))
    assert seeds == [(0, True), (1, True), (2, True)]
    rec = out["records"][0]
    assert (rec["n"], rec["correct"]) == (3, 1)
    assert out["scores"] == {"pass@1": pytest.approx(1 / 3), "pass@3": 1.0}
