"""The OpenAI request bodies the server accepts, checked before anything reaches the engine.

Unknown fields are ignored (clients send many optional ones), but a field we would silently get
wrong (tools, logprobs, best_of, echo, suffix, penalties) is refused with a 400 naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import APIError

MAX_STOP = 4  # OpenAI's limit on stop sequences


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {p.type for p in self.content} - {"text"}
        if kinds:
            raise APIError(400, f"message content parts of type {sorted(kinds)} are not supported; send text",
                           param="messages")
        return "".join(p.text or "" for p in self.content)


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        stops = self.stop_list()
        if len(stops) > MAX_STOP:
            raise ValueError(f"`stop` takes at most {MAX_STOP} sequences, got {len(stops)}")
        for key in ("presence_penalty", "frequency_penalty"):
            if getattr(self, key):
                raise ValueError(f"`{key}` is not supported by this server; leave it at 0")
        if self.logprobs:
            raise ValueError("`logprobs` is not supported by this server")
        if self.stream_options is not None and not self.stream:
            raise ValueError("`stream_options` is only allowed when `stream` is true")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list | None = None
    tool_choice: object | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _chat_checks(self):
        if self.tools:
            raise ValueError("`tools` (function calling) is not supported by this server")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("set one of `max_tokens` and `max_completion_tokens`")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(min_length=1)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_checks(self):
        if self.echo:
            raise ValueError("`echo` is not supported by this server")
        if self.best_of not in (None, 1) and self.best_of != self.n:
            raise ValueError("`best_of` is not supported by this server")
        if self.suffix:
            raise ValueError("`suffix` is not supported by this server")
        return self

    def token_limit(self) -> int | None:
        return self.max_tokens


class LoadLoraRequest(_Body):
    """vLLM's body for POST /v1/load_lora_adapter."""
    lora_name: str = Field(min_length=1, max_length=256)
    lora_path: str = Field(min_length=1)


class UnloadLoraRequest(_Body):
    """vLLM's body for POST /v1/unload_lora_adapter."""
    lora_name: str = Field(min_length=1, max_length=256)
    lora_int_id: int | None = None
