"""`tunesmith serve`: an OpenAI-compatible server with many LoRA adapters batched together.

app/routes (`routes`), request bodies (`schemas`), OpenAI response and stream bodies
(`streaming`), requests to engine sequences (`service`), the continuous-batching engine
(`engine`, with its KV cache in `kv`), the adapters in memory (`adapter_pool`), sampling and stop
strings (`sampling`), keys and limits (`auth`), `--model` resolution (`loading`), start-up
(`launch`), and the vLLM / llama.cpp hand-offs (`vllm`, `gguf`). See docs/serve.md.
"""

from .launch import ServeOptions, build_app, serve

__all__ = ["ServeOptions", "build_app", "serve"]
