"""`tunesmith serve` checked with the official `openai` client against PEFT's own greedy output.

One server per module: the tiny model, three LoRA adapters (different target modules, so rows
really differ per layer) with room for only two in memory (the third forces LRU eviction and
reload), an API key, and small limits so the 400/413/503 paths are cheap to reach.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from serve_helpers import make_lora, peft_greedy, post, running  # noqa: E402

pytestmark = pytest.mark.integration
KEY = "sk-test-key"
TARGETS = {"alpha": ["q_proj", "v_proj"], "beta": ["down_proj", "o_proj"], "gamma": ["up_proj", "k_proj"]}
PROMPTS = ["The cat sat on", "Once upon a time there", "red blue green", "Add 3 and 4.", "a b c d e f g"]


@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    made = {name: make_lora(tiny_dir, root / name, seed=i, targets=t) for i, (name, t) in enumerate(TARGETS.items())}
    (root / "runtime").mkdir()  # the only directory /v1/load_lora_adapter may read from
    made["delta"] = make_lora(tiny_dir, root / "runtime" / "delta", seed=9, targets=["gate_proj"])
    return made


@pytest.fixture(scope="module")
def server(tiny_dir, adapters):
    from tunesmith.serve import ServeOptions, build_app
    from tunesmith.serve.loading import Target

    target = Target(base=tiny_dir, adapters={n: adapters[n] for n in TARGETS}, name="tiny")
    opts = ServeOptions(api_key=KEY, max_adapters=2, max_batch=16, max_queue=32, max_tokens=64,
                        max_body_bytes=64 * 1024, allowed_adapter_dirs=[str(adapters["delta"].parent)])
    app, service = build_app(target, opts)
    with running(app, service) as url:
        yield url, service


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _expected(tiny_dir, tok, adapter, prompt_ids, max_tokens):
    ids = peft_greedy(tiny_dir, adapter, prompt_ids, max_tokens)
    finish = "stop" if ids and ids[-1] == tok.eos_token_id else "length"
    return tok.decode([i for i in ids if i != tok.eos_token_id], skip_special_tokens=True), len(ids), finish


def test_models_lists_base_and_adapters_with_parent(server, client):
    url, _ = server
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "alpha", "beta", "gamma"}
    assert models["tiny"].parent is None
    assert all(models[n].parent == "tiny" for n in TARGETS)


@pytest.mark.parametrize("model", ["tiny", "alpha", "beta", "gamma"])
def test_greedy_completion_equals_peft_alone(tiny_dir, tok, adapters, client, model):
    prompt = PROMPTS[0]
    want, n_tokens, finish = _expected(tiny_dir, tok, adapters.get(model), tok(prompt).input_ids, 24)
    r = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == finish
    assert r.usage.completion_tokens == n_tokens
    assert r.usage.prompt_tokens == len(tok(prompt).input_ids)


def test_adapters_change_the_output(client):
    """Otherwise the equality tests could not tell one adapter (or the base) from another."""
    texts = {m: client.completions.create(model=m, prompt=PROMPTS[1], max_tokens=12, temperature=0).choices[0].text
             for m in ("tiny", "alpha", "beta", "gamma")}
    assert len(set(texts.values())) == 4, texts


def test_chat_stream_equals_whole_answer_and_usage_comes_last(client):
    messages = [{"role": "user", "content": "Repeat the words: red cat"}]
    whole = client.chat.completions.create(model="beta", messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="beta", messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.object == "chat.completion" and chunks[0].object == "chat.completion.chunk"


def test_stream_without_usage_ends_with_done(server):
    import urllib.request

    url, _ = server
    body = b'{"model": "alpha", "prompt": "The cat", "max_tokens": 5, "temperature": 0, "stream": true}'
    req = urllib.request.Request(url + "/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        events = [line for line in resp.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1]) and '"usage"' not in "".join(events)


def test_sixteen_concurrent_clients_over_three_adapters_equal_their_sequential_runs(server, client):
    _, service = server
    jobs = [(m, PROMPTS[i % len(PROMPTS)]) for i, m in enumerate(["tiny", "alpha", "beta", "gamma"] * 4)]

    def ask(job):
        model, prompt = job
        r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
        return r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens

    sequential = [ask(j) for j in jobs]
    service.engine.max_rows_seen = service.engine.max_adapters_seen = 0
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        concurrent_ = list(pool.map(ask, jobs))
    assert concurrent_ == sequential
    assert service.engine.max_rows_seen >= 4, "requests did not share decode steps"
    assert service.engine.max_adapters_seen >= 2, "no decode step mixed adapters"
    loaded = [a for a in service.pool.by_name.values() if a.peft_name is not None]
    assert len(loaded) <= 2  # --max-adapters held while three adapters were in use


def test_runtime_load_and_unload(tiny_dir, tok, adapters, server, client, tmp_path):
    url, _ = server
    status, text = post(url + "/v1/load_lora_adapter", {"lora_name": "delta", "lora_path": str(adapters["delta"])}, KEY)
    assert status == 200, text
    assert {m.id: m.parent for m in client.models.list().data}["delta"] == "tiny"
    want, n, _ = _expected(tiny_dir, tok, adapters["delta"], tok(PROMPTS[2]).input_ids, 16)
    r = client.completions.create(model="delta", prompt=PROMPTS[2], max_tokens=16, temperature=0)
    assert (r.choices[0].text, r.usage.completion_tokens) == (want, n)
    # a second load under the same name, a path outside the allowed directories, a non-adapter
    assert post(url + "/v1/load_lora_adapter", {"lora_name": "delta", "lora_path": str(adapters["delta"])}, KEY)[0] == 400
    status, err = post(url + "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(adapters["alpha"])}, KEY)
    assert status == 400 and "outside the allowed" in err["error"]["message"]
    assert post(url + "/v1/load_lora_adapter", {"lora_name": "y", "lora_path": str(tmp_path)}, KEY)[0] == 400

    assert post(url + "/v1/unload_lora_adapter", {"lora_name": "delta"}, KEY)[0] == 200
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="delta", prompt="x", max_tokens=2)
    status, err = post(url + "/v1/unload_lora_adapter", {"lora_name": "delta"}, KEY)
    assert status == 404 and err["error"]["code"] == "model_not_found"
    assert "delta" not in {m.id for m in client.models.list().data}


def test_unload_while_in_flight_finishes_the_running_request(tiny_dir, tok, adapters, server, client):
    """The unload lands between decode steps while the request runs: the request still gets the
    adapter's full answer, the weights stay until it finishes, new requests get 404 at once."""
    url, service = server
    assert post(url + "/v1/load_lora_adapter", {"lora_name": "delta2", "lora_path": str(adapters["delta"])}, KEY)[0] == 200
    adapter = service.pool.lookup("delta2")
    want, n, _ = _expected(tiny_dir, tok, adapters["delta"], tok(PROMPTS[3]).input_ids, 48)
    gate, held = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fut = pool.submit(client.completions.create, model="delta2", prompt=PROMPTS[3], max_tokens=48, temperature=0)
        _wait_running(service)
        try:
            service.engine.call(lambda: (held.set(), gate.wait(30)))  # hold the engine between two decode steps
            assert held.wait(30)
            unload = pool.submit(post, url + "/v1/unload_lora_adapter", {"lora_name": "delta2"}, KEY)
            _wait_commands(service, 1)  # the unload is queued behind the hold
            probe = service.engine.call(lambda: (adapter.in_use, adapter.peft_name is not None))
        finally:
            gate.set()
        assert probe.result(timeout=30) == (1, True)  # unregistered, still in use, still loaded
        assert unload.result(timeout=30)[0] == 200
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="delta2", prompt="x", max_tokens=2)
        r = fut.result(timeout=120)
    assert (r.choices[0].text, r.usage.completion_tokens) == (want, n)
    assert service.engine.call(lambda: adapter.peft_name).result(timeout=30) is None  # dropped once finished


def _wait_commands(service, n, timeout=30.0):
    import time

    end = time.monotonic() + timeout
    while len(service.engine.commands) < n:
        assert time.monotonic() < end, "the command never reached the engine"
        time.sleep(0.002)


def _wait_running(service, timeout=30.0):
    import time

    end = time.monotonic() + timeout
    while not service.engine.running:
        assert time.monotonic() < end, "the request never started"
        time.sleep(0.002)


def test_api_key_on_every_route_but_health(server):
    url, _ = server
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    status, err = post(url + "/v1/load_lora_adapter", {"lora_name": "z", "lora_path": "/tmp"})
    assert status == 401 and err["error"]["type"] == "authentication_error"
    import urllib.request

    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        assert resp.status == 200


def test_errors_have_openai_shape_and_status(server, client):
    url, _ = server
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="word " * 3000, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # over the server's --max-tokens
        client.completions.create(model="tiny", prompt="hi", max_tokens=65)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="hi", temperature=5)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
    status, err = post(url + "/v1/chat/completions", b'{"model": "tiny", "messages": [', KEY)
    assert status == 400 and set(err["error"]) == {"message", "type", "param", "code"}
    status, err = post(url + "/v1/completions", {"model": "tiny", "prompt": "x" * 70_000}, KEY)
    assert status == 413 and err["error"]["code"] == "request_too_large"
    status, err = post(url + "/v1/nothing", {}, KEY)
    assert status == 404 and "error" in err
    assert client.models.list().data  # still serving after all of that


def test_queue_full_is_503(server, client):
    _, service = server
    gate = threading.Event()
    service.engine.call(lambda: gate.wait(30))  # hold the engine between steps: nothing leaves the queue
    try:
        quick = openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(quick.completions.create, model="tiny", prompt="hi", max_tokens=2, n=16)
                       for _ in range(2)]
            _wait_queued(service, 32)
            with pytest.raises(openai.InternalServerError) as e:
                quick.completions.create(model="tiny", prompt="hi", max_tokens=2)
            assert e.value.status_code == 503 and e.value.body["code"] == "queue_full"
            gate.set()
            assert all(len(f.result(timeout=120).choices) == 16 for f in waiting)
    finally:
        gate.set()


def _wait_queued(service, n, timeout=30.0):
    import time

    end = time.monotonic() + timeout
    while len(service.engine.waiting) < n:
        assert time.monotonic() < end, "requests never reached the queue"
        time.sleep(0.01)


def test_sampling_params(client):
    a = client.completions.create(model="alpha", prompt="The", max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    b = client.completions.create(model="alpha", prompt="The", max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text
    r = client.completions.create(model="tiny", prompt="The", max_tokens=5, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and len({c.text for c in r.choices}) == 1
    assert all(c.finish_reason == "length" for c in r.choices) and r.usage.completion_tokens == 15
    full = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=24, temperature=0).choices[0].text
    stop = full.strip()[len(full.strip()) // 2:][:3]
    cut = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_eval_judge_endpoint_talks_to_the_server(server, monkeypatch):
    from tunesmith.evaluate.judge import OpenAIJudge

    monkeypatch.setenv("TS_TEST_KEY", KEY)
    judge = OpenAIJudge(server[0] + "/v1", "gamma", api_key_env="TS_TEST_KEY", max_tokens=8)
    assert isinstance(judge("Rate this answer from 1 to 10."), str)


HOSTILE = [
    b"", b"null", b"[]", b"{}", b"not json", b'{"model": 1, "prompt": "x"}', b'{"model": "tiny"}',
    b'{"model": "tiny", "prompt": "x", "max_tokens": -1}', b'{"model": "tiny", "prompt": "x", "n": 1000}',
    b'{"model": "tiny", "prompt": "x", "top_p": 0}', b'{"model": "tiny", "prompt": [999999]}',
    b'{"model": "tiny", "prompt": "x", "stop": [1, 2]}', b'{"model": "tiny", "prompt": {"a": [[[[]]]]}}',
    b'{"model": "tiny", "prompt": "x", "stream": "yes please"}', b'{"model": "tiny", "prompt": "x", "seed": "s"}',
    b'{"model": "tiny", "prompt": "\ud800"}', b'{"model": "tiny", "prompt": []}',
]


def test_hostile_requests_get_4xx_and_the_server_keeps_serving(server, client):
    url, _ = server
    for body in HOSTILE:
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/load_lora_adapter"):
            status, err = post(url + path, body, KEY)
            assert 400 <= status < 500, ascii((path, body, status, err))  # ascii: the report must print a lone surrogate
            assert isinstance(err, dict) and set(err["error"]) == {"message", "type", "param", "code"}, ascii((path, body, err))
    r = client.completions.create(model="tiny", prompt="still there", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_bounded_load(server, client):
    """48 requests over the base and three adapters from 16 threads: no errors, within 5 minutes."""
    models = ["tiny", "alpha", "beta", "gamma"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futs = [pool.submit(client.completions.create, model=models[i % 4], prompt=PROMPTS[i % 5], max_tokens=4,
                            temperature=0.8, seed=i) for i in range(48)]
        done, pending = concurrent.futures.wait(futs, timeout=300)
    assert not pending
    assert all(f.exception() is None for f in done), [f.exception() for f in done if f.exception()][:3]
    assert all(f.result().choices[0].finish_reason in ("stop", "length") for f in done)
