"""Every preference loss against hand-computed values (PITFALLS 9 gives the DPO/IPO/ORPO checks).

Shared inputs: β = 0.1; log-probs policy chosen/rejected = -10, -12; reference chosen/rejected
= -11, -11. The DPO logit is h = (-10 - -11) - (-12 - -11) = 1 - (-1) = 2.
"""

import math

import pytest
import torch

from tunesmith.objectives.preference_losses import (bradley_terry_loss, cpo_loss, dpo_loss, hinge_loss, ipo_loss,
                                                    kto_loss, orpo_log_odds, orpo_loss, simpo_loss)

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
PC, PR, RC, RR = T(-10.0), T(-12.0), T(-11.0), T(-11.0)


def test_dpo_check_values():
    """-log σ(β h): β=0.1 -> -log σ(0.2) = log(1 + e^-0.2) = log(1.818731) = 0.598139;
    swapped chosen/rejected -> -log σ(-0.2) = 0.798139; β = 0.5 -> -log σ(1) = 0.313262.
    Rewards: β (π - π_ref) = 0.1 * 1 = 0.1 and 0.1 * -1 = -0.1."""
    losses, rc, rr = dpo_loss(PC, PR, RC, RR, beta=0.1)
    assert losses.item() == pytest.approx(0.598139, abs=1e-6)
    assert (rc.item(), rr.item()) == pytest.approx((0.1, -0.1))
    assert dpo_loss(PR, PC, RR, RC, beta=0.1)[0].item() == pytest.approx(0.798139, abs=1e-6)
    assert dpo_loss(PC, PR, RC, RR, beta=0.5)[0].item() == pytest.approx(0.313262, abs=1e-6)


def test_dpo_equal_policy_and_reference_is_ln2():
    """h = 0 -> -log σ(0) = ln 2 = 0.693147 whatever the log-probs."""
    lp = T(-3.0, -50.0)
    losses, rc, rr = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.1)
    assert losses.tolist() == pytest.approx([math.log(2)] * 2)
    assert (rc - rr).abs().max().item() == 0


def test_dpo_label_smoothing():
    """ε = 0.1: 0.9 * 0.598139 + 0.1 * 0.798139 = 0.618139."""
    assert dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.1)[0].item() == pytest.approx(0.618139, abs=1e-6)


def test_ipo_check_value():
    """(h - 1/(2β))² = (2 - 5)² = 9.0."""
    assert ipo_loss(PC, PR, RC, RR, beta=0.1)[0].item() == pytest.approx(9.0)


def test_hinge():
    """max(0, 1 - β h) = 1 - 0.2 = 0.8; with β = 1: max(0, 1 - 2) = 0."""
    assert hinge_loss(PC, PR, RC, RR, beta=0.1)[0].item() == pytest.approx(0.8)
    assert hinge_loss(PC, PR, RC, RR, beta=1.0)[0].item() == 0.0


def test_simpo():
    """β = 2, γ = 0.5, mean log-probs -1 / -2: -log σ(2·(-1) - 2·(-2) - 0.5) = -log σ(1.5)
    = log(1 + e^-1.5) = 0.201413. Rewards β·mean = -2, -4."""
    losses, rc, rr = simpo_loss(T(-1.0), T(-2.0), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.201413, abs=1e-6)
    assert (rc.item(), rr.item()) == (-2.0, -4.0)


def test_cpo():
    """-log σ(0.1·(-10) - 0.1·(-12)) + 1.0 · NLL = -log σ(0.2) + 0.5 = 0.598139 + 0.5 = 1.098139
    (chosen mean log-prob -0.5 -> NLL 0.5)."""
    assert cpo_loss(PC, PR, T(-0.5), beta=0.1, alpha=1.0)[0].item() == pytest.approx(1.098139, abs=1e-6)


def test_orpo_check_values():
    """Mean log-probs -0.5 / -1.5: log odds = lp - log(1 - e^lp):
    -0.5 - log(0.393469) = 0.432752; -1.5 - log(0.776870) = -1.247522; difference 1.680270;
    -log σ(1.680270) = 0.170859. Loss with λ = β = 0.1: NLL 0.5 + 0.1 · 0.170859 = 0.517086."""
    assert orpo_log_odds(T(-0.5), T(-1.5)).item() == pytest.approx(1.680270, abs=1e-6)
    assert orpo_loss(T(-0.5), T(-1.5), beta=1.0)[0].item() == pytest.approx(0.5 + 0.170859, abs=1e-6)
    assert orpo_loss(T(-0.5), T(-1.5), beta=0.1)[0].item() == pytest.approx(0.517086, abs=1e-6)


def test_kto():
    """β = 0.1, r = -10 - (-11) = 1, KL estimate 0.5 -> z0 = 0.5.
    desirable: 1 - σ(0.1·(1 - 0.5)) = 1 - σ(0.05) = 1 - 0.512497 = 0.487503
    undesirable: 1 - σ(0.1·(0.5 - 1)) = 1 - σ(-0.05) = 0.512497, times λ_U = 2 -> 1.024995
    a negative KL estimate is clamped to 0: desirable 1 - σ(0.1) = 0.475021."""
    pol, ref = T(-10.0, -10.0), T(-11.0, -11.0)
    losses, rewards = kto_loss(pol, ref, torch.tensor([True, False]), T(0.5), beta=0.1, undesirable_weight=2.0)
    assert losses.tolist() == pytest.approx([0.487503, 1.024995], abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.1, 0.1])
    assert kto_loss(pol[:1], ref[:1], torch.tensor([True]), T(-3.0), beta=0.1)[0].item() == pytest.approx(0.475021, abs=1e-6)


def test_kto_kl_gets_no_gradient():
    kl = T(0.5).requires_grad_()
    pol = T(-10.0).requires_grad_()
    kto_loss(pol, T(-11.0), torch.tensor([True]), kl, beta=0.1)[0].sum().backward()
    assert kl.grad is None and pol.grad is not None


def test_bradley_terry():
    """-log σ(1 - (-1)) = log(1 + e^-2) = 0.126928; with margin 0.5: -log σ(1.5) = 0.201413."""
    assert bradley_terry_loss(T(1.0), T(-1.0)).item() == pytest.approx(0.126928, abs=1e-6)
    assert bradley_terry_loss(T(1.0), T(-1.0), T(0.5)).item() == pytest.approx(0.201413, abs=1e-6)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = T(-10.0).requires_grad_(), T(-12.0).requires_grad_()
    dpo_loss(pc, pr, RC, RR, beta=0.1)[0].sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises log π(y_w) and lowers log π(y_l)
