"""The Playground's client against a live `tunesmith serve` (the tiny model and one LoRA adapter, an
API key): it lists both models, and a streamed answer through the UI's relay is the same text, token
for token, as the server's own non-streamed greedy answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

import pytest

pytest.importorskip("fastapi")

from serve_helpers import make_lora, post, running  # noqa: E402

from tunesmith.ui.playground import ChatRequest, PlaygroundError, ServeClient, relay  # noqa: E402

pytestmark = pytest.mark.integration
KEY = "sk-ui-playground"


def _run_async(coro):
    """asyncio.run in a thread of its own: Playwright's sync API (the browser tests, in the same
    session) leaves an event loop running in the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    from tunesmith.serve import ServeOptions, build_app
    from tunesmith.serve.loading import Target

    adapter = make_lora(tiny_dir, tmp_path_factory.mktemp("pg") / "tuned", seed=3, targets=["q_proj", "v_proj"])
    app, service = build_app(Target(base=tiny_dir, adapters={"tuned": adapter}, name="tiny"), ServeOptions(api_key=KEY, max_tokens=64))
    with running(app, service) as url:
        yield url


def _streamed(client: ServeClient, model: str, prompt: str) -> tuple[str, int]:
    async def go():
        req = ChatRequest(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=12)
        return [x async for x in relay(client.chat_stream(req))]

    events = _run_async(go())
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    return text, sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))


def test_models_and_streamed_answers_equal_the_servers(served):
    client = ServeClient(served, KEY)
    assert client.models()[0]["id"] == "tiny" and {(m["id"], m["parent"]) for m in client.models()} == {("tiny", None), ("tuned", "tiny")}
    answers = {}
    for model in ("tiny", "tuned"):
        text, pieces = _streamed(client, model, "Add 2 and 3.")
        status, whole = post(served + "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Add 2 and 3."}],
                                                                "max_tokens": 12, "temperature": 0}, key=KEY)
        assert status == 200 and text == whole["choices"][0]["message"]["content"]
        assert pieces > 1  # one chunk per token, not one blob
        answers[model] = text
    assert answers["tiny"] != answers["tuned"]  # otherwise side by side could not tell them apart


def test_wrong_key_and_unknown_model(served):
    with pytest.raises(PlaygroundError, match="refused the API key"):
        ServeClient(served, "nope").models()
    with pytest.raises(PlaygroundError) as e:
        ServeClient(served, KEY).chat_stream(ChatRequest(model="missing", messages=[{"role": "user", "content": "hi"}]))
    assert e.value.status == 400 and "missing" in str(e.value)
