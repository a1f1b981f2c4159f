"""What a request becomes before the engine sees it: the model name resolved to the base or an
adapter, the prompt rendered and tokenized, the token budget checked against the context, and one
engine `Sequence` per choice whose events arrive on an asyncio queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from .adapter_pool import AdapterPool
from .engine import Engine, Event, Sequence
from .errors import APIError
from .sampling import SamplingParams, TextAssembler, make_generator


@dataclass
class Limits:
    max_tokens: int = 1024  # the most a request may ask for (and the default when it asks for nothing)
    max_context: int = 2048  # prompt + completion tokens


class Generation:
    """The choices of one request. The engine thread calls `emit`; the request awaits `events`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_lens: list[int], n: int):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.prompt_lens, self.n = prompt_lens, n
        self.seqs: list[Sequence] = []
        self.id = uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def emitter(self, index: int):
        def emit(event: Event) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        return emit

    async def events(self):
        """(choice index, Event) until every choice has finished; an error ends it at once."""
        open_ = len(self.seqs)
        while open_:
            index, event = await self.queue.get()
            if event.error is not None:
                self.cancel()
                raise event.error
            if event.finish_reason is not None:
                open_ -= 1
            yield index, event

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancelled = True

    def usage(self, completion_tokens: int) -> dict:
        prompt = sum(self.prompt_lens)  # each distinct prompt counts once, whatever n is
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _check_text(text: str, param: str) -> str:
    """JSON may carry lone surrogates (\\ud800), which no tokenizer can encode: a 400, not a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(400, f"`{param}` is not valid Unicode text ({e.reason} at character {e.start})", param=param) from None
    return text


class Service:
    def __init__(self, engine: Engine, pool: AdapterPool, tokenizer, base_name: str, limits: Limits):
        self.engine, self.pool, self.tokenizer = engine, pool, tokenizer
        self.base_name, self.limits = base_name, limits

    def resolve(self, model: str):
        """None for the base model, else the adapter; 404 for a name the server does not have."""
        return None if model == self.base_name else self.pool.lookup(model)

    def chat_ids(self, messages: list[dict], adapter=None) -> list[int]:
        for m in messages:
            _check_text(m["content"], "messages")
        tok = self.tokenizer
        template = (adapter.chat_template if adapter is not None else None) or getattr(tok, "chat_template", None)
        if not template:
            raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
        try:
            text = tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template that raises on this conversation (e.g. roles out of order)
            raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from None
        # the template renders BOS itself, so the tokenizer must not add a second one
        return tok(text, add_special_tokens=False).input_ids

    def text_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            vocab = len(self.tokenizer)
            if any(not 0 <= t < vocab for t in prompt):
                raise APIError(400, f"`prompt` token ids must lie in [0, {vocab})", param="prompt")
            return list(prompt)
        return self.tokenizer(_check_text(prompt, "prompt")).input_ids

    def budget(self, prompt_len: int, asked: int | None) -> int:
        lim = self.limits
        if asked is not None and asked > lim.max_tokens:
            raise APIError(400, f"`max_tokens` {asked} is over this server's limit of {lim.max_tokens} "
                           "(start it with a larger --max-tokens)", param="max_tokens")
        want = asked if asked is not None else min(lim.max_tokens, lim.max_context - prompt_len)
        if prompt_len + max(want, 1) > lim.max_context:
            raise APIError(400, f"This model's maximum context length is {lim.max_context} tokens. However, you "
                           f"requested {prompt_len + want} tokens ({prompt_len} in the prompt, {want} in the "
                           "completion). Please reduce the length of the prompt or completion.",
                           code="context_length_exceeded", param="messages")
        return want

    def start(self, req, prompts: list[list[int]]) -> Generation:
        adapter = self.resolve(req.model)
        budgets = [self.budget(len(ids), req.token_limit()) for ids in prompts]
        gen = Generation(asyncio.get_running_loop(), [len(p) for p in prompts], req.n)
        for p, (ids, budget) in enumerate(zip(prompts, budgets)):
            for j in range(req.n):
                params = SamplingParams(max_tokens=budget, temperature=req.temperature, top_p=req.top_p,
                                        seed=req.seed, stop=req.stop_list())
                # choice j of a seeded request draws from seed + j, so choices differ yet repeat
                seed = None if req.seed is None else req.seed + j
                gen.seqs.append(Sequence(ids, params, adapter, gen.emitter(p * req.n + j),
                                         TextAssembler(self.tokenizer, params.stop), make_generator(seed)))
        self.engine.submit(gen.seqs)
        return gen
