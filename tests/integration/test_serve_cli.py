"""`tunesmith serve` as a user runs it: a trained run served from its config in a subprocess,
called by the `openai` client with the run's name as the model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from serve_helpers import free_port, peft_greedy  # noqa: E402

pytestmark = pytest.mark.integration
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _cli(*args, log: Path | None = None):
    """`tunesmith serve ARGS` in a subprocess. A long-running server logs to a file, not a pipe:
    nobody reads a pipe while the test runs, and a full one would block the server mid-write."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (closed when the process ends)
    return subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", *args], env=env,
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def test_public_host_without_key_refuses_to_start(tiny_dir):
    proc = _cli("--model", str(tiny_dir), "--host", "0.0.0.0", "--port", str(free_port()))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--api-key" in out


def test_serve_a_trained_run_and_call_it_by_name(tmp_path, tiny_dir, tok, alpaca64):
    from tunesmith.api import train

    cfg = {"model": {"path": str(tiny_dir), "dtype": "fp32"},
           "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
           "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"precision": "fp32", "max_steps": 2, "micro_batch_size": 4, "grad_accum_steps": 1,
                     "save_every": 0, "progress": False, "seed": 0, "lr": 5e-2},
           "output_dir": str(tmp_path / "myrun")}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    train(config)

    port = free_port()
    log = tmp_path / "serve.log"
    proc = _cli("--model", str(config), "--port", str(port), "--api-key", "k1", log=log)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", max_retries=0, timeout=120)
        assert {m.id: m.parent for m in client.models.list().data} == {tiny_dir.name: None, "myrun": tiny_dir.name}
        r = client.chat.completions.create(model="myrun", messages=[{"role": "user", "content": "Add 2 and 3."}],
                                           max_tokens=12, temperature=0)
        text = tok.apply_chat_template([{"role": "user", "content": "Add 2 and 3."}], tokenize=False, add_generation_prompt=True)
        want = peft_greedy(tiny_dir, tmp_path / "myrun" / "adapter", tok(text, add_special_tokens=False).input_ids, 12)
        assert r.usage.completion_tokens == len(want)
        assert r.choices[0].message.content == tok.decode([t for t in want if t != tok.eos_token_id], skip_special_tokens=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_healthy(proc, url, log: Path, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError("the server did not become healthy")
