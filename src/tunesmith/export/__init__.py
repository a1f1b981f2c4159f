"""Quantized and exported forms of a model, for the tools that serve it: INT8/NF4/GPTQ/AWQ checkpoints
(quantize*.py, gptq.py, awq.py) and GGUF for llama.cpp (gguf*.py)."""
