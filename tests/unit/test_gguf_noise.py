"""The quantization-noise statistics (llama.cpp `perplexity --kl-divergence`) by hand, and the verdict."""

import math

import numpy as np
import pytest

from tunesmith.export.gguf_noise import MIN_KLD_BOUND, NOISE_FACTOR, PUBLISHED_KLD, judge, max_kld, noise_stats


def test_noise_stats_by_hand():
    """Two positions, vocabulary 2.
    pos 0: p_float = (1/2, 1/2), p_quant = (3/4, 1/4), correct token 1:
        KLD = 1/2 ln(2/3) + 1/2 ln(2) = 0.143841; Δp = 1/4 - 1/2 = -0.25; tops 0 and 0 (same).
    pos 1: identical (e, 1) logits, correct token 0: KLD 0, Δp 0; same top.
    mean KLD 0.0719205; RMS Δp = sqrt(0.0625 / 2) = 0.176777; ln ppl ratio = (ln 4 - ln 2) / 2."""
    ref = [np.array([[0.0, 0.0], [1.0, 0.0]])]
    q = [np.array([[math.log(3), 0.0], [1.0, 0.0]])]
    s = noise_stats(ref, q, [np.array([1, 0])])
    assert s["positions"] == 2
    assert s["mean_kld"] == pytest.approx(0.143841 / 2, abs=1e-6)
    assert s["max_kld"] == pytest.approx(0.143841, abs=1e-6)
    assert s["same_top_p"] == 1.0
    assert s["mean_dp"] == pytest.approx(-0.125) and s["rms_dp"] == pytest.approx(math.sqrt(0.0625 / 2))
    assert s["ln_ppl_ratio"] == pytest.approx((math.log(4) - math.log(2)) / 2)


def test_identical_files_have_no_noise_and_a_flipped_top_counts():
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(5, 7))]
    assert noise_stats(ref, ref, [np.zeros(5, dtype=int)])["mean_kld"] == pytest.approx(0, abs=1e-12)
    flipped = [ref[0][:, ::-1].copy()]
    s = noise_stats(ref, flipped, [np.zeros(5, dtype=int)])
    assert s["same_top_p"] < 1.0 and s["mean_kld"] > 0.1


def test_verdict_fails_only_far_outside_the_published_noise():
    stats = {"mean_kld": 5 * PUBLISHED_KLD["Q8_0"]}
    assert judge("Q8_0", stats) == []  # 5x llama.cpp's LLaMA 3 8B number: a small model's ordinary noise
    assert max_kld("Q8_0") == max(MIN_KLD_BOUND, NOISE_FACTOR * PUBLISHED_KLD["Q8_0"])
    failures = judge("Q8_0", {"mean_kld": 1.5})  # a wrong block layout: whole nats
    assert failures and "not quantization noise but a broken file" in failures[0]
    assert judge("Q4_K_M", {"mean_kld": float("nan")})
    assert max_kld("Q2_K") > max_kld("Q4_K_M") > max_kld("Q8_0")
