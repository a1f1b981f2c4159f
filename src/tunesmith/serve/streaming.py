"""OpenAI's response bodies, whole and streamed.

Streamed, a chat completion is server-sent events: for each choice a first chunk whose delta
carries `role`, then chunks whose delta carries `content`, then one with an empty delta and the
`finish_reason`; with `stream_options.include_usage` every chunk has `"usage": null` and one last
chunk with no choices carries the usage; the stream ends with `data: [DONE]`. Completions stream
the same way with `text` instead of `delta`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from .errors import APIError
from .service import Generation


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def collect(gen: Generation) -> tuple[list[str], list[str], int]:
    """Texts and finish reasons of every choice, and the completion tokens, once all are done."""
    n = len(gen.seqs)
    texts, reasons, tokens = [""] * n, [""] * n, [0] * n
    async for i, ev in gen.events():
        texts[i] += ev.text
        tokens[i] = ev.completion_tokens
        if ev.finish_reason:
            reasons[i] = ev.finish_reason
    return texts, reasons, sum(tokens)


def _head(gen: Generation, model: str, obj: str) -> dict:
    return {"id": gen.id, "object": obj, "created": gen.created, "model": model, "system_fingerprint": None}


async def chat_response(gen: Generation, model: str) -> dict:
    texts, reasons, tokens = await collect(gen)
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None, "finish_reason": r}
               for i, (t, r) in enumerate(zip(texts, reasons))]
    return {**_head(gen, model, "chat.completion"), "id": f"chatcmpl-{gen.id}",
            "choices": choices, "usage": gen.usage(tokens)}


async def completion_response(gen: Generation, model: str) -> dict:
    texts, reasons, tokens = await collect(gen)
    choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
               for i, (t, r) in enumerate(zip(texts, reasons))]
    return {**_head(gen, model, "text_completion"), "id": f"cmpl-{gen.id}", "choices": choices, "usage": gen.usage(tokens)}


async def stream(gen: Generation, model: str, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """The SSE body; cancels the request's sequences when the client goes away."""
    head = {**_head(gen, model, "chat.completion.chunk" if chat else "text_completion"),
            "id": f"chatcmpl-{gen.id}" if chat else f"cmpl-{gen.id}"}
    extra = {"usage": None} if include_usage else {}

    def chunk(i: int, text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
        return sse({**head, "choices": [choice], **extra})

    tokens = [0] * len(gen.seqs)
    try:
        if chat:
            for i in range(len(gen.seqs)):
                yield chunk(i, None, None, role=True)
        try:
            async for i, ev in gen.events():
                tokens[i] = ev.completion_tokens
                if ev.text:
                    yield chunk(i, ev.text, None)
                if ev.finish_reason:
                    yield chunk(i, None, ev.finish_reason)
        except APIError as e:  # headers are sent: the error goes into the stream, as vLLM does
            yield sse(e.body())
            yield "data: [DONE]\n\n"
            return
        if include_usage:
            yield sse({**head, "choices": [], "usage": gen.usage(sum(tokens))})
        yield "data: [DONE]\n\n"
    finally:
        gen.cancel()  # a no-op when every choice has finished; stops the rest on a disconnect
