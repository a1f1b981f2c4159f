"""The Playground's client of `tunesmith serve`, against a refused port and a small stand-in HTTP
server that answers the way serve does (its error bodies and SSE framing). The live server is in
tests/integration/test_ui_playground_serve.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from tunesmith.errors import UserError
from tunesmith.ui.playground import ChatRequest, PlaygroundError, ServeClient, check_serve_url, relay, safe_url

KEY = "sk-secret-playground-key"


def _run_async(coro):
    """asyncio.run in a thread of its own: Playwright's sync API (the browser tests, in the same
    session) leaves an event loop running in the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._json(401, {"error": {"message": "Incorrect API key provided; send `Authorization: Bearer <key>`"}})
            return False
        return True

    def do_GET(self):
        if self.path == "/v1/models" and self._authorized():
            self._json(200, {"object": "list", "data": [{"id": "tiny", "parent": None}, {"id": "myrun", "parent": "tiny"}]})
        elif self.path == "/garbage/v1/models":
            self._json(200, {"hello": "world"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(body)
        if not self._authorized():
            return
        if body["model"] not in ("tiny", "myrun"):
            self._json(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Hel", "lo"):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)


def _chat(model: str = "myrun") -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)


def test_a_refused_connection_says_how_to_start_the_server():
    port = _free_port()  # nothing listens there
    client = ServeClient(f"http://127.0.0.1:{port}", KEY)
    with pytest.raises(PlaygroundError, match=rf"cannot reach tunesmith serve at http://127.0.0.1:{port} .*--serve-url") as e:
        client.models()
    assert e.value.status == 502 and KEY not in str(e.value)


def test_models_and_a_stream(stub):
    client = ServeClient(stub + "/v1/", KEY)  # a /v1 suffix and a trailing slash are both fine
    assert client.models() == [{"id": "tiny", "parent": None, "max_model_len": None},
                                {"id": "myrun", "parent": "tiny", "max_model_len": None}]
    stream = client.chat_stream(_chat())
    events = []
    while (ev := stream.next_event()) is not None:
        events.append(ev)
    stream.close()
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]] == ["Hel", "lo"] and events[-1] == "[DONE]"
    sent = _Handler.seen[-1]
    assert sent["stream"] is True and sent["model"] == "myrun" and sent["temperature"] == 0.0 and sent["max_tokens"] == 8


def test_relay_frames_events_for_the_page(stub):
    async def collect():
        return [x async for x in relay(ServeClient(stub, KEY).chat_stream(_chat("tiny")))]

    out = _run_async(collect())
    assert out[-1] == "data: [DONE]\n\n" and len(out) == 3 and all(x.startswith("data: ") and x.endswith("\n\n") for x in out)


def test_a_wrong_key_names_the_option_and_never_the_key(stub):
    wrong = "sk-wrong-key-123"
    with pytest.raises(PlaygroundError, match="refused the API key.*--serve-key") as e:
        ServeClient(stub, wrong).models()
    assert wrong not in str(e.value) and KEY not in str(e.value)
    assert KEY not in repr(ServeClient(stub, KEY))


def test_an_unknown_model_is_the_servers_words_as_a_400(stub):
    with pytest.raises(PlaygroundError, match="does not exist") as e:
        ServeClient(stub, KEY).chat_stream(_chat("nope"))
    assert e.value.status == 400


def test_not_an_openai_server(stub):
    with pytest.raises(PlaygroundError, match="did not answer like an OpenAI server"):
        ServeClient(stub + "/garbage", KEY).models()


def test_serve_url_checks_and_hides_credentials():
    with pytest.raises(UserError, match="--serve-url"):
        check_serve_url("localhost:8000")
    assert check_serve_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert safe_url("http://user:pw@host:9/v1?k=secret") == "http://host:9/v1"


def test_chat_request_is_checked():
    with pytest.raises(ValidationError):
        ChatRequest(model="m", messages=[])
    with pytest.raises(ValidationError):
        ChatRequest(model="m", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(ValidationError):
        ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], temperature=3)


def test_relay_reports_a_server_that_stops_mid_answer_and_hangs_up():
    class Dying:
        closed = False

        def __init__(self):
            self.events = iter(['{"choices": [{"index": 0, "delta": {"content": "Hi"}}]}'])

        def next_event(self):
            for e in self.events:
                return e
            raise TimeoutError("timed out")

        def close(self):
            Dying.closed = True

    async def collect():
        return [x async for x in relay(Dying())]

    out = _run_async(collect())
    assert out[0].startswith('data: {"choices"') and out[-1] == "data: [DONE]\n\n"
    assert json.loads(out[1][len("data: "):])["error"]["message"] == "the server stopped answering (timed out)"
    assert Dying.closed
