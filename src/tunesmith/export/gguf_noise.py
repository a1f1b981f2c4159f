"""A quant type's expected noise: the quantized GGUF against llama.cpp's own float GGUF of the same model.

Checking a quantized file against transformers mixes two things: whether the file is converted right
(judged on the float file: F32/F16/BF16 must match transformers almost exactly) and how much this
quant type perturbs the model (llama.cpp's quantized kernels also quantize the activations, so even
Q8_0 parts from fp32 on ~2% of tokens of a real model: PITFALLS 29). This module measures the second
the way llama.cpp's `perplexity --kl-divergence` does, on the same positions, both files in llama.cpp:

  mean KLD      mean over positions of KL(p_float || p_quant) over the whole vocabulary, in nats;
  99% KLD       its 99th percentile;
  same top p    share of positions where both files' argmax token is the same;
  mean / RMS Δp the change in the probability of the correct (next) token;
  ln ppl ratio  ln(PPL(quant) / PPL(float)).

The verdict compares the mean KLD with llama.cpp's published value for the type (LLaMA 3 8B on
Wikitext-2, no importance matrix: tools/perplexity/README.md, "LLaMA 3 8b Scoreboard" and the
"LLaMA 2 vs. LLaMA 3" table for same-top-p). Small models quantize worse than 8B ones (narrower rows,
fewer weights to average the error over), so a file fails only beyond `NOISE_FACTOR` times the
published value: far outside any quant type's noise, where a broken block layout or a wrong tensor
type lands (KLD of whole nats), never at the level quantization noise reaches.
"""

from __future__ import annotations

import math

import numpy as np

# llama.cpp tools/perplexity/README.md, LLaMA 3 8B vs its FP16, Wikitext-2, no imatrix (mean KLD, nats).
PUBLISHED_KLD = {
    "F16": 0.000551, "BF16": 0.000551, "Q8_0": 0.001355, "Q6_K": 0.005452, "Q5_K_M": 0.010762,
    "Q5_K_S": 0.016595, "Q5_1": 0.018045, "Q5_0": 0.022239, "Q4_K_M": 0.031273, "Q4_K_S": 0.043136,
    "Q4_1": 0.071683, "Q4_0": 0.071940, "Q3_K_L": 0.087176, "Q3_K_M": 0.101913, "Q3_K_S": 0.228217,
    "Q2_K": 0.445132,
}
# Same table ("LLaMA 2 vs. LLaMA 3"): how often the quantized file's top token is the float file's.
PUBLISHED_SAME_TOP = {"Q8_0": 0.97674, "Q6_K": 0.96031, "Q4_K_M": 0.91901, "Q2_K": 0.71138}
# Measured on SmolLM2-135M-Instruct (bench/README.md): its KLD is 3-8x LLaMA 3 8B's for every type.
# Failing at 25x leaves room for smaller and odder models while a broken file (KLD > 1 nat) still fails.
NOISE_FACTOR = 25.0
# Floor for the bound: the float types' published KLD (0.00055) comes from storing the reference
# logits in 16 bits; ours are fp32, and a tiny bound would fail on rounding.
MIN_KLD_BOUND = 0.01


def max_kld(quant: str) -> float:
    """The mean KLD beyond which `quant` is not noise but a broken file."""
    return max(MIN_KLD_BOUND, NOISE_FACTOR * PUBLISHED_KLD.get(quant, PUBLISHED_KLD["Q2_K"]))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def noise_stats(ref_logits: list[np.ndarray], q_logits: list[np.ndarray], targets: list[np.ndarray]) -> dict:
    """llama.cpp's `--kl-divergence` statistics of `q_logits` against `ref_logits` (lists of (T, V))."""
    kld, dp, same, nll_ref, nll_q = [], [], [], [], []
    for ref, q, tgt in zip(ref_logits, q_logits, targets):
        lp_ref, lp_q = _log_softmax(ref), _log_softmax(q)
        p_ref = np.exp(lp_ref)
        kld.append((p_ref * (lp_ref - lp_q)).sum(-1))
        rows = np.arange(len(tgt))
        dp.append(np.exp(lp_q[rows, tgt]) - p_ref[rows, tgt])
        same.append(ref.argmax(-1) == q.argmax(-1))
        nll_ref.append(-lp_ref[rows, tgt])
        nll_q.append(-lp_q[rows, tgt])
    kld, dp, same = np.concatenate(kld), np.concatenate(dp), np.concatenate(same)
    return {
        "positions": int(len(kld)),
        "mean_kld": float(kld.mean()),
        "kld_99": float(np.percentile(kld, 99)),
        "max_kld": float(kld.max()),
        "same_top_p": float(same.mean()),
        "mean_dp": float(dp.mean()),
        "rms_dp": float(math.sqrt((dp ** 2).mean())),
        "ln_ppl_ratio": float(np.concatenate(nll_q).mean() - np.concatenate(nll_ref).mean()),
    }


def llama_logits(llm, windows: list[list[int]]) -> list[np.ndarray]:
    """llama.cpp's next-token logits at every position but the last of each window, (T-1, V) each."""
    out = []
    for ids in windows:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids) - 1], dtype=np.float32))
    return out


def judge(quant: str, stats: dict) -> list[str]:
    """Failures: only a mean KLD far outside this type's expected noise."""
    bound = max_kld(quant)
    if not stats["mean_kld"] <= bound:  # also catches NaN
        published = PUBLISHED_KLD.get(quant)
        return [f"{quant} differs from llama.cpp's float file of the same model by a mean KL divergence of "
                f"{stats['mean_kld']:.4f} nats (allowed {bound:.3f}: {NOISE_FACTOR:.0f}x llama.cpp's published "
                f"{published if published is not None else 'n/a'} for {quant} on LLaMA 3 8B); "
                "this is not quantization noise but a broken file"]
    return []
