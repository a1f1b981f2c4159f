"""Verify a GGUF file in llama.cpp against the `transformers` model it was made from.

Two questions, kept apart (PITFALLS 29):

*Is the file converted right?* Judged on a float file (F32/F16/BF16: the export itself, or for a
quantized export the float GGUF it is quantized from), each check a reason to fail:
1. tokenizer: llama.cpp tokenizes probe texts (chat-rendered prompts with their special tokens,
   plain text, unicode) into exactly the ids the Hugging Face tokenizer gives;
2. chat template: the file carries the tokenizer's template, and llama-cpp-python's Jinja
   renderer turns a conversation into the same string as `apply_chat_template` (PITFALLS 8);
3. greedy decode: the first `match_tokens` greedy tokens of every prompt are identical to
   transformers' fp32 greedy decode, unless the paths part at a near-tie (transformers' two
   candidates within `NEAR_TIE` logits, recorded as the margin);
4. perplexity and top-1 next-token agreement on held-out text, llama.cpp vs transformers, within
   `MAX_PPL_INCREASE` and above `MIN_TOP1_AGREEMENT`.

*How much noise does this quant type add?* A quantized file keeps checks 1-2 (its metadata must be
exact) and the perplexity bound (generous: a broken file multiplies perplexity); its greedy decode
and top-1 agreement against transformers are reported, not judged, and it is compared with the float
file in llama.cpp by KL divergence and same-top-token rate (`gguf_noise.py`), failing only far
outside the noise llama.cpp publishes for the type.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .gguf_noise import judge, llama_logits, max_kld, noise_stats
from .gguf_quant import require_llama_cpp

# Relative perplexity increase allowed per type before verification fails. Generous for low bits:
# it catches a broken file (wrong permutation, wrong tokenizer: perplexity x2 to x100), not a
# quantizer that is merely lossy.
MAX_PPL_INCREASE = {"F32": 0.001, "F16": 0.01, "BF16": 0.02, "Q8_0": 0.02, "Q6_K": 0.10,
                    "Q5_K_M": 0.15, "Q5_K_S": 0.15, "Q5_0": 0.15, "Q5_1": 0.15,
                    "Q4_K_M": 0.30, "Q4_K_S": 0.30, "Q4_0": 0.40, "Q4_1": 0.40}
DEFAULT_MAX_PPL_INCREASE = 1.0  # Q3_K_*, Q2_K
# Logit gap under which a greedy divergence is a tie broken by rounding (F16/Q8_0 move logits by
# ~1e-3..1e-2 on our models; a wrong layout moves them by whole units).
NEAR_TIE = 0.05
# Float files are the conversion itself: they must pick transformers' next token almost everywhere.
MIN_TOP1_AGREEMENT = {"F32": 0.99, "F16": 0.97, "BF16": 0.97}
FLOAT_TYPES = tuple(MIN_TOP1_AGREEMENT)

PROBE_CONVERSATIONS = [
    [{"role": "user", "content": "Where does the fox go?"}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Name a color."}],
    [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two, three."},
     {"role": "user", "content": "Again, please."}],
]
PROBE_TEXTS = ["Hello world", "  two  spaces, tabs\tand\nnew lines\n\n", "naïve café – 日本語 🙂", "it's 2026; x=3.14!"]


@dataclass
class Verification:
    quant: str
    tokenizer_mismatches: list[str] = field(default_factory=list)
    template_problem: str = ""
    greedy: list[dict] = field(default_factory=list)  # prompt, hf, gguf, same_prefix
    ppl_hf: float = float("nan")
    ppl_gguf: float = float("nan")
    top1_agreement: float = float("nan")
    eval_tokens: int = 0
    max_ppl_increase: float = 0.0
    failures: list[str] = field(default_factory=list)
    # Quantized files only: the float file's own verification, and this file's noise against it.
    reference: dict | None = None
    noise: dict | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def ppl_increase(self) -> float:
        return self.ppl_gguf / self.ppl_hf - 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "ppl_increase": self.ppl_increase}


def open_llama(path: Path, n_ctx: int):
    llama_cpp = require_llama_cpp("verifying a GGUF file")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=1,
                           logits_all=True, verbose=False, n_gpu_layers=0)


def check_tokenizer(llm, tokenizer, prompts: list[str]) -> list[str]:
    """Probe texts on which llama.cpp's token ids differ from the Hugging Face tokenizer's."""
    bad = []
    for text in prompts + PROBE_TEXTS:
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        cpp = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if list(cpp) != list(hf):
            bad.append(f"{text[:40]!r}: transformers {hf[:12]} vs llama.cpp {list(cpp)[:12]}")
    return bad


def check_template(llm, tokenizer) -> str:
    """'' when the GGUF's chat template renders every probe conversation as the tokenizer does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    stored = llm.metadata.get("tokenizer.chat_template")
    if not tokenizer.chat_template:
        return "" if stored is None else "the GGUF has a chat template the tokenizer lacks"
    if stored != tokenizer.chat_template:
        return "the GGUF's tokenizer.chat_template differs from the tokenizer's"
    fmt = Jinja2ChatFormatter(stored, eos_token=tokenizer.eos_token or "", bos_token=tokenizer.bos_token or "",
                              add_generation_prompt=True)
    for conv in PROBE_CONVERSATIONS:
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        got = fmt(messages=conv).prompt
        if got != want:
            return f"llama-cpp-python renders {got[:80]!r}, the tokenizer {want[:80]!r}"
    return ""


def greedy_hf(model, ids: list[int], n: int) -> list[int]:
    """Plain argmax with the KV cache: `generate()` would apply the generation config's processors
    (min length suppresses EOS, repetition penalties, ...) that llama.cpp's argmax does not."""
    import torch

    out_ids = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            nxt = int(out.logits[0, -1].argmax())
            out_ids.append(nxt)
            out = model(torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    return out_ids


def divergence_margin(model, ids: list[int], hf: list[int], cpp: list[int], same: int) -> float:
    """How much transformers prefers its own token over llama.cpp's where the greedy paths first part
    (0.0 when they never do). Below `NEAR_TIE` the two tokens are tied to within rounding, and
    which one wins is the rounding's choice, not a sign of a broken file."""
    import torch

    if same >= len(hf):
        return 0.0
    with torch.no_grad():
        logits = model(torch.tensor([ids + hf[:same]])).logits[0, -1]
    return float(logits[hf[same]] - logits[cpp[same]])


def greedy_llama(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
    return lse - logits[np.arange(len(targets)), targets]


def _memo(memo: dict | None, key, compute):
    """transformers' side of a check, computed once when a quantized file and its float file are both
    verified against the same model (`memo` is shared by the two)."""
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _hf_window(model, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(per-position NLL, argmax) of transformers on one window."""
    import torch

    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0, :-1].float().numpy()
    return _nll(hf, np.array(ids[1:])), hf.argmax(-1)


def compare_perplexity(llm, model, windows: list[list[int]], memo: dict | None = None) -> tuple[float, float, float, int]:
    """(ppl transformers, ppl llama.cpp, top-1 agreement, tokens scored) over token windows."""
    nll_hf, nll_cpp, agree, n = 0.0, 0.0, 0, 0
    for ids in windows:
        targets = np.array(ids[1:])
        hf_nll, hf_top = _memo(memo, ("window", tuple(ids)), lambda: _hf_window(model, ids))
        llm.reset()
        llm.eval(ids)
        cpp = np.array(llm.scores[: len(ids) - 1])
        nll_hf += hf_nll.sum()
        nll_cpp += _nll(cpp, targets).sum()
        agree += int((hf_top == cpp.argmax(-1)).sum())
        n += len(targets)
    return math.exp(nll_hf / n), math.exp(nll_cpp / n), agree / n, n


def verify(path: Path, model, tokenizer, quant: str, windows: list[list[int]], match_tokens: int = 8,
           new_tokens: int = 16, max_ppl_increase: float | None = None, reference: Path | None = None,
           reference_type: str = "F32", memo: dict | None = None) -> Verification:
    """Verify the GGUF at `path`; `model` is the fp32 transformers model. A quantized `quant` needs
    `reference`, the float GGUF (`reference_type`) it was quantized from."""
    memo = {} if memo is None else memo
    if quant not in FLOAT_TYPES and reference is None:
        raise ValueError(f"verifying a {quant} file needs the float GGUF it was quantized from (reference=)")
    v = Verification(quant, max_ppl_increase=max_ppl_increase if max_ppl_increase is not None
                     else MAX_PPL_INCREASE.get(quant, DEFAULT_MAX_PPL_INCREASE))
    n_ctx = max(max(len(w) for w in windows), 512)
    try:
        llm = open_llama(path, n_ctx)
    except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
        v.failures.append(f"llama.cpp cannot load the file: {e}")
        return v
    try:
        _check_against_transformers(v, llm, model, tokenizer, windows, match_tokens, new_tokens, memo)
    finally:
        llm.close()
    if quant not in FLOAT_TYPES:
        ref = verify(reference, model, tokenizer, reference_type, windows, match_tokens, new_tokens, memo=memo)
        v.reference = ref.to_dict()
        v.failures += [f"the {reference_type} file it is quantized from: {f}" for f in ref.failures]
        v.noise = measure_noise(path, reference, windows, n_ctx)
        v.noise["max_mean_kld"] = max_kld(quant)
        v.failures += judge(quant, v.noise)
    return v


def _check_against_transformers(v: Verification, llm, model, tokenizer, windows, match_tokens, new_tokens,
                                memo: dict) -> None:
    """Checks 1-4 of the module docstring; greedy and top-1 only report for quantized types."""
    exact = v.quant in FLOAT_TYPES
    prompts = _prompts(tokenizer, windows)
    v.tokenizer_mismatches = check_tokenizer(llm, tokenizer, prompts)
    if v.tokenizer_mismatches:
        v.failures.append(f"llama.cpp tokenizes {len(v.tokenizer_mismatches)} probe text(s) differently "
                          f"from transformers, e.g. {v.tokenizer_mismatches[0]}")
    v.template_problem = check_template(llm, tokenizer)
    if v.template_problem:
        v.failures.append(f"chat template: {v.template_problem}")
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        hf = _memo(memo, ("greedy", tuple(ids), new_tokens), lambda: greedy_hf(model, ids, new_tokens))
        cpp = greedy_llama(llm, ids, new_tokens)
        same = next((i for i, (a, b) in enumerate(zip(hf, cpp)) if a != b), len(hf))
        margin = divergence_margin(model, ids, hf, cpp, same)
        v.greedy.append({"prompt": text, "hf": hf, "gguf": cpp, "same_prefix": same, "margin": margin,
                         "hf_text": tokenizer.decode(hf), "gguf_text": tokenizer.decode(cpp)})
    short = [g for g in v.greedy if g["same_prefix"] < match_tokens and g["margin"] > NEAR_TIE]
    if exact and short:
        v.failures.append(f"greedy decode differs from transformers within the first {match_tokens} tokens "
                          f"for {len(short)} of {len(v.greedy)} prompts (first at token {short[0]['same_prefix']}, "
                          f"where transformers prefers its token by {short[0]['margin']:.3f} logits)")
    v.ppl_hf, v.ppl_gguf, v.top1_agreement, v.eval_tokens = compare_perplexity(llm, model, windows, memo)
    if exact and not v.top1_agreement >= (least := MIN_TOP1_AGREEMENT[v.quant]):
        v.failures.append(f"llama.cpp picks the transformers model's next token at only {100 * v.top1_agreement:.1f}% "
                          f"of {v.eval_tokens} held-out positions (at least {100 * least:.0f}% expected for {v.quant})")
    if not v.ppl_increase <= v.max_ppl_increase:  # also catches NaN
        v.failures.append(f"perplexity {v.ppl_gguf:.3f} in llama.cpp vs {v.ppl_hf:.3f} in transformers "
                          f"(+{100 * v.ppl_increase:.1f}%, allowed +{100 * v.max_ppl_increase:.1f}% for {v.quant})")


def measure_noise(path: Path, reference: Path, windows: list[list[int]], n_ctx: int) -> dict:
    """`gguf_noise.noise_stats` of the file at `path` against the float file `reference`, both in
    llama.cpp, on the held-out windows (one file open at a time: the logits are what is kept)."""
    targets = [np.array(w[1:]) for w in windows]
    logits = {}
    for key, p in (("ref", reference), ("q", path)):
        llm = open_llama(p, n_ctx)
        try:
            logits[key] = llama_logits(llm, windows)
        finally:
            llm.close()
    return noise_stats(logits["ref"], logits["q"], targets)


def _prompts(tokenizer, windows: list[list[int]]) -> list[str]:
    """Chat-rendered probe conversations (when the tokenizer has a template) plus raw text openings."""
    out = []
    if tokenizer.chat_template:
        out += [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in PROBE_CONVERSATIONS]
    out += [tokenizer.decode(w[:12], skip_special_tokens=True) for w in windows[:2]]
    return [p for p in out if p]
