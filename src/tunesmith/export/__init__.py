"""Turn a trained model into files other tools serve: quantized checkpoints and GGUF for llama.cpp."""
