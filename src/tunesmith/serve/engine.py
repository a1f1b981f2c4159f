"""The engine: one thread that owns the model and runs continuous batching.

Each loop turn: run pending adapter commands (load/unload), admit waiting sequences (each is
prefilled alone, then its KV cache joins the batch), run one decode step for every running row in
a single forward pass with PEFT's per-row `adapter_names=`, sample each row with its own settings,
and let finished rows leave at once. Requests therefore join and leave between decode steps, and
rows for different adapters (and the base) share every decode step.

Why by hand: transformers' continuous batching (`generate_batch` / paged attention) schedules
requests of one model configuration and does not pass PEFT's per-row adapter names into the
forward; PEFT's `generate(adapter_names=...)` batches mixed adapters but only within one static
batch. The scheduler here is the small piece neither has: a left-padded cache that rows join and
leave (`kv.BatchCache`) and a loop that feeds it.

What is not batched: prefill. A new sequence's prompt runs alone (no padding), so its first token
is exactly what the adapter alone gives; decode steps, which dominate generation, are batched.
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .adapter_pool import BASE, Adapter, AdapterPool
from .errors import APIError, QueueFull
from .kv import BatchCache
from .sampling import SamplingParams, TextAssembler, make_generator, next_token

log = logging.getLogger("tunesmith.serve")


@dataclass
class Event:
    """What a sequence tells its request: new text, and at the end why it stopped and its token count."""
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" when finished
    completion_tokens: int = 0
    error: APIError | None = None


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: Adapter | None  # None: the base model
    emit: Callable[[Event], None]  # called from the engine thread; must not block
    assembler: TextAssembler
    generator: torch.Generator = field(default_factory=lambda: make_generator(None))
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False  # set by the request when its client goes away
    acquired: bool = False


class Engine:
    def __init__(self, model, tokenizer, pool: AdapterPool, max_batch: int = 16, max_queue: int = 64,
                 max_context: int = 2048):
        self.base_model = model.eval()
        self.tokenizer = tokenizer
        self.pool = pool
        self.max_batch, self.max_queue, self.max_context = max_batch, max_queue, max_context
        self.eos_ids = _eos_ids(model, tokenizer)
        # transformers 5.2x renamed `past_key_values` to `cache` (input and output); accept both
        self.cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.commands: collections.deque = collections.deque()
        self.running: list[Sequence] = []
        self.device = next(model.parameters()).device
        self.batch = BatchCache(self.device)
        self.cv = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="tunesmith-engine", daemon=True)
        self.steps = 0  # decode steps run (for tests and /health)
        self.max_rows_seen = 0  # the widest decode step so far
        self.max_adapters_seen = 0  # the most distinct adapters (base counted) in one decode step

    # --- the HTTP side -----------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.thread.join(timeout)

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue a request's sequences (all or none); QueueFull when the queue has no room."""
        with self.cv:
            if len(self.waiting) + len(seqs) > self.max_queue:
                raise QueueFull(self.max_queue)
            self.waiting.extend(seqs)
            self.cv.notify_all()

    def call(self, fn: Callable[[], object]) -> concurrent.futures.Future:
        """Run `fn` in the engine thread between decode steps (adapter loads and unloads)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self.cv:
            self.commands.append((fn, fut))
            self.cv.notify_all()
        return fut

    def stats(self) -> dict:
        return {"running": len(self.running), "waiting": len(self.waiting), "decode_steps": self.steps}

    # --- the engine thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self.cv:
                while not (self.stopping or self.commands or self.waiting or self.running):
                    self.cv.wait(1.0)
                if self.stopping:
                    break
            self._run_commands()
            try:
                self._admit()
                if self.running:
                    self._decode_step()
            except Exception as e:  # our bug or an out-of-memory: fail the batch, keep serving
                log.exception("engine step failed")
                for seq in self.running:
                    seq.emit(Event(error=APIError(500, f"generation failed: {type(e).__name__}: {e}")))
                    self._release(seq)
                self.running, self.batch = [], BatchCache(self.device)
        for seq in self.running + list(self.waiting):
            seq.emit(Event(error=APIError(503, "the server is shutting down")))

    def _run_commands(self) -> None:
        while self.commands:
            fn, fut = self.commands.popleft()
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

    def _forward(self, rows: list[Sequence], **inputs):
        model = self.pool.model
        if model is None:  # no adapter was ever loaded: the plain transformers model
            return self.base_model(**inputs, use_cache=True, logits_to_keep=1)
        names = [seq.adapter.peft_name if seq.adapter else BASE for seq in rows]
        return model(**inputs, use_cache=True, logits_to_keep=1, adapter_names=names)

    def _admit(self) -> None:
        with self.cv:
            candidates = list(self.waiting)
        deferred = []
        for seq in candidates:
            if seq.cancelled:
                continue
            if len(self.running) >= self.max_batch:
                deferred.append(seq)
                continue
            if seq.adapter is not None:
                if seq.adapter.removed:
                    seq.emit(Event(error=APIError(404, f"The model `{seq.adapter.name}` was unloaded.", code="model_not_found")))
                    continue
                try:
                    ready = self.pool.ensure_loaded(self.base_model, seq.adapter)
                except APIError as e:
                    seq.emit(Event(error=e))
                    continue
                if ready is None:  # every loaded adapter is busy; try again after a step
                    deferred.append(seq)
                    continue
                self.pool.acquire(seq.adapter)
                seq.acquired = True
            self._prefill(seq)
        with self.cv:  # keep what arrived meanwhile, after what was deferred (arrival order kept)
            arrived = list(self.waiting)[len(candidates):]
            self.waiting = collections.deque(deferred + arrived)

    def _prefill(self, seq: Sequence) -> None:
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
        out = self._forward([seq], input_ids=ids)
        if self._accept(seq, out.logits[0, -1]):
            self._release(seq)
            return
        self.batch.join(getattr(out, self.cache_kw), len(seq.prompt_ids))
        self.running.append(seq)

    def _decode_step(self) -> None:
        mask, positions = self.batch.step_inputs()
        last = torch.tensor([[seq.generated[-1]] for seq in self.running], dtype=torch.long, device=self.device)
        out = self._forward(self.running, input_ids=last, attention_mask=mask, position_ids=positions,
                            **{self.cache_kw: self.batch.cache})
        self.batch.cache = getattr(out, self.cache_kw)
        self.batch.advance()
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(self.running))
        self.max_adapters_seen = max(self.max_adapters_seen, len({id(seq.adapter) for seq in self.running}))
        keep = []
        for i, seq in enumerate(self.running):
            if seq.cancelled or self._accept(seq, out.logits[i, -1]):
                self._release(seq)
            else:
                keep.append(i)
        self.batch.keep(keep)
        self.running = [self.running[i] for i in keep]

    def _accept(self, seq: Sequence, logits: torch.Tensor) -> bool:
        """Sample the next token of `seq`, tell its request, and say whether it has finished."""
        if seq.cancelled:
            return True
        token = next_token(logits.float().cpu(), seq.params, seq.generator)
        seq.generated.append(token)
        n = len(seq.generated)
        finish = None
        if token in self.eos_ids:
            finish, text = "stop", ""
        else:
            text = seq.assembler.add(token)
            if seq.assembler.stopped:
                finish = "stop"
            elif n >= seq.params.max_tokens or len(seq.prompt_ids) + n >= self.max_context:
                finish = "length"
        if finish is not None:
            text += seq.assembler.flush()
            seq.emit(Event(text, finish, n))
            return True
        if text:
            seq.emit(Event(text, None, n))
        return False

    def _release(self, seq: Sequence) -> None:
        if seq.acquired:
            seq.acquired = False
            self.pool.release(seq.adapter)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    for x in (eos if isinstance(eos, list) else [eos]):
        if x is not None:
            ids.add(int(x))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
