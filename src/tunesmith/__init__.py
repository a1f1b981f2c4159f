"""tunesmith: from raw data to an evaluated, merged, quantized and served fine-tuned LLM."""

__version__ = "0.1.0"
