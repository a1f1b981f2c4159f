"""The serve pieces that need no server: KV cache joins and leaves, sampling, stop strings, auth,
request checks, --model resolution and the vLLM command line."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")

from tunesmith.errors import UserError  # noqa: E402
from tunesmith.serve.adapter_pool import check_adapter_dir  # noqa: E402
from tunesmith.serve.auth import check_bind, check_key  # noqa: E402
from tunesmith.serve.errors import APIError  # noqa: E402
from tunesmith.serve.kv import BatchCache  # noqa: E402
from tunesmith.serve.sampling import SamplingParams, TextAssembler, make_generator, next_token  # noqa: E402


class _Layer:
    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class _Cache:
    def __init__(self, *layers):
        self.layers = list(layers)


def _row(length: int, fill: float) -> _Cache:
    """A one-row cache of `length` positions, (1, H=1, T, D=2), every value `fill`."""
    t = torch.full((1, 1, length, 2), fill)
    return _Cache(_Layer(t.clone(), t.clone()))


def test_rows_join_left_padded_and_leave_trimmed():
    b = BatchCache()
    b.join(_row(3, 1.0), 3)
    b.join(_row(5, 2.0), 5)  # longer: the first row gets 2 columns of padding on the left
    assert b.mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    keys = b.cache.layers[0].keys
    assert keys.shape == (2, 1, 5, 2) and keys[0, 0, :2].abs().sum() == 0 and (keys[0, 0, 2:] == 1).all()
    mask, pos = b.step_inputs()
    assert mask.shape == (2, 6) and pos.tolist() == [[3], [5]]  # each row's next position is its own length
    b.keep([0])  # the long row leaves: the two padding columns go with it
    assert b.mask.tolist() == [[1, 1, 1]] and b.cache.layers[0].keys.shape == (1, 1, 3, 2)
    b.join(_row(1, 3.0), 1)  # shorter: the newcomer is padded
    assert b.mask.tolist() == [[1, 1, 1], [0, 0, 1]] and b.lengths == [3, 1]
    b.keep([])
    assert len(b) == 0 and b.cache is None


def test_greedy_and_top_p_and_seed():
    logits = torch.tensor([0.0, 3.0, 2.9, -5.0])
    assert next_token(logits, SamplingParams(max_tokens=1, temperature=0.0), make_generator(0)) == 1
    # top_p 0.5: token 1 alone holds ~0.51 of the mass, so nothing else can be drawn
    p = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.5)
    assert {next_token(logits, p, make_generator(s)) for s in range(50)} == {1}
    p = SamplingParams(max_tokens=1, temperature=1.0)
    draws = [next_token(logits, p, make_generator(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # the same seed draws the same token
    assert len({next_token(logits, p, make_generator(s)) for s in range(50)}) > 1


class _CharTok:
    """One character per token id (id = ord), so tests can split a stop string across tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def _feed(asm: TextAssembler, text: str) -> list[str]:
    out = []
    for ch in text:
        out.append(asm.add(ord(ch)))
        if asm.stopped:
            break
    return out


def test_stop_string_is_held_back_then_cut():
    asm = TextAssembler(_CharTok(), ["END", "xy"])
    deltas = _feed(asm, "abcENDzzz")
    assert "".join(deltas) == "abc" and asm.stopped and asm.text == "abc"
    assert "E" not in "".join(deltas[:5])  # "E" was never sent: it could have been the start of END
    asm = TextAssembler(_CharTok(), ["END"])
    assert "".join(_feed(asm, "abEN")) + asm.flush() == "abEN" and not asm.stopped  # finished by length: all text out
    asm = TextAssembler(_CharTok(), ["cd", "bcd"])
    _feed(asm, "abcd")
    assert asm.text == "a"  # the earliest match wins, not the first in the list


def test_public_bind_needs_a_key_and_the_key_is_checked():
    with pytest.raises(UserError, match="--api-key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "k")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(UserError):
        check_bind("myhost.example", None)  # a name may resolve anywhere
    check_key("Bearer k", "k")
    for given in (None, "Bearer x", "k", "Basic k"):
        with pytest.raises(APIError) as e:
            check_key(given, "k")
        assert e.value.status == 401


def test_request_checks():
    from pydantic import ValidationError

    from tunesmith.serve.schemas import ChatCompletionRequest, CompletionRequest

    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValidationError, match="at most 4"):
        CompletionRequest(model="m", prompt="x", stop=["a", "b", "c", "d", "e"])
    with pytest.raises(ValidationError, match="tools"):
        ChatCompletionRequest(model="m", messages=msgs, tools=[{"type": "function"}])
    with pytest.raises(ValidationError, match="stream_options"):
        ChatCompletionRequest(model="m", messages=msgs, stream_options={"include_usage": True})
    r = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                              max_completion_tokens=5, user="ignored")
    assert r.messages[0].text() == "ab" and r.token_limit() == 5


def _adapter(path, **cfg):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64, **cfg}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def test_adapter_dir_checks(tmp_path):
    ok = _adapter(tmp_path / "allowed" / "a")
    assert check_adapter_dir(ok, [tmp_path / "allowed"]) == ok.resolve()
    outside = _adapter(tmp_path / "other" / "b")
    with pytest.raises(APIError, match="outside the allowed"):
        check_adapter_dir(outside, [tmp_path / "allowed"])
    with pytest.raises(APIError, match="outside the allowed"):  # no escaping through ..
        check_adapter_dir(tmp_path / "allowed" / ".." / "other" / "b", [tmp_path / "allowed"])
    with pytest.raises(APIError, match="DoRA"):
        check_adapter_dir(_adapter(tmp_path / "allowed" / "d", use_dora=True), [])
    with pytest.raises(APIError, match="PREFIX_TUNING"):
        check_adapter_dir(_adapter(tmp_path / "allowed" / "p", peft_type="PREFIX_TUNING"), [])
    with pytest.raises(APIError, match="not a PEFT adapter"):
        check_adapter_dir(tmp_path, [])


def test_model_resolution_and_vllm_command(tmp_path, tiny_dir):
    from tunesmith.serve.launch import ServeOptions
    from tunesmith.serve.loading import parse_adapter_args, resolve_model
    from tunesmith.serve.vllm import vllm_command

    run = tmp_path / "run7"
    _adapter(run / "adapter", base_model_name_or_path=str(tiny_dir))
    t = resolve_model(run)
    assert t.base == tiny_dir.resolve() and t.adapters == {"run7": (run / "adapter").resolve()} and t.name == tiny_dir.name
    assert resolve_model(tiny_dir).adapters == {}
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(tmp_path / "missing")
    t.adapters.update(parse_adapter_args([f"other={run}"]))
    cmd = vllm_command(t, ServeOptions(api_key="k", port=9000))
    assert cmd[:3] == ["vllm", "serve", str(tiny_dir.resolve())]
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "64"
    i = cmd.index("--lora-modules")
    assert cmd[i + 1:i + 3] == [f"run7={(run / 'adapter').resolve()}", f"other={(run / 'adapter').resolve()}"]
    assert cmd[cmd.index("--api-key") + 1] == "k"
    with pytest.raises(UserError, match="given twice"):
        parse_adapter_args([f"x={run}", f"x={run}"])


def test_gguf_goes_to_llama_cpp_server_without_adapters(tmp_path):
    from tunesmith.serve.gguf import llama_server_command
    from tunesmith.serve.launch import ServeOptions
    from tunesmith.serve.loading import resolve_model

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    t = resolve_model(f)
    cmd = llama_server_command(t, ServeOptions(api_key="k"))
    assert cmd[1:5] == ["-m", "llama_cpp.server", "--model", str(f.resolve())] and cmd[cmd.index("--api_key") + 1] == "k"
    t.adapters["a"] = tmp_path
    with pytest.raises(UserError, match="without adapters"):
        llama_server_command(t, ServeOptions())
