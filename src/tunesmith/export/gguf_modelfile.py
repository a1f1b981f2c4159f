"""An Ollama `Modelfile` for an exported GGUF.

Ollama's TEMPLATE is a Go template, not Jinja, so a Jinja chat template cannot be carried over
literally. We recognise the template by what it renders (not by its source text, which varies
between models): when a probe conversation renders exactly as ChatML or Llama 3 does, the matching
Go template is written; otherwise TEMPLATE is left out and Ollama falls back to the Jinja template
stored in the GGUF (`tokenizer.chat_template`), which it matches against the templates it knows.
The stop tokens are the tokenizer's EOS and the end-of-turn tokens the template uses.
"""

from __future__ import annotations

_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
          {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]

FAMILIES = {
    "chatml": (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
        "<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n",
        '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n',
        ["<|im_end|>", "<|im_start|>"],
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nV<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>'
        '{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n',
        ["<|eot_id|>", "<|start_header_id|>"],
    ),
}


def template_family(tokenizer) -> str | None:
    """'chatml' / 'llama3' when the tokenizer's template renders a probe conversation exactly as
    that family does (a leading BOS aside: llama.cpp and Ollama add it from the GGUF's add_bos)."""
    if not tokenizer.chat_template:
        return None
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template that refuses a system turn, say: not one we can translate
        return None
    if tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token):]
    return next((name for name, (rendered, _, _) in FAMILIES.items() if text == rendered), None)


def modelfile_text(gguf_name: str, tokenizer) -> str:
    family = template_family(tokenizer)
    lines = [f"# ollama create NAME -f {gguf_name.rsplit('.gguf', 1)[0]}.Modelfile", f"FROM ./{gguf_name}"]
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if family is not None:
        _, go_template, family_stops = FAMILIES[family]
        lines.append(f'TEMPLATE """{go_template}"""')
        stops += [s for s in family_stops if s not in stops]
    else:
        lines.append("# TEMPLATE: none written; Ollama reads the chat template stored in the GGUF")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"
