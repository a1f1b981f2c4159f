"""Quantized and exported forms of a model: INT8/NF4/GPTQ/AWQ (quantize*.py, gptq.py, awq.py) and GGUF (gguf*.py)."""
