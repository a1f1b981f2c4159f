"""Preference losses: pure functions over per-sequence log-probabilities, one per variant.

Every pairwise loss maps `(B,)` tensors to `(losses, chosen_rewards, rejected_rewards)`, all `(B,)`.
Rewards are the implicit rewards each paper defines (detached: they are for logging). Log-probs
are summed over the response tokens unless the docstring says "mean" (length-normalised).
The objective (objectives/preference.py) picks one by name from PAIR_LOSSES; nothing branches
on the name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """DPO, Rafailov et al. 2023, "Direct Preference Optimization", eq. 7:

        L = -log σ(β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])

    With `label_smoothing` ε (cDPO, Mitchell 2023): (1-ε)·L(h) + ε·L(-h), h the logit above.
    """
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    return losses, _reward(beta, policy_chosen_logps, ref_chosen_logps), _reward(beta, policy_rejected_logps, ref_rejected_logps)


def ipo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17: L = (h - 1/(2τ))² with h the DPO log-ratio difference and τ = β.
    (The paper averages log-probs over tokens; pass mean log-probs for that, sums for TRL's default.)"""
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    losses = (logits - 1 / (2 * beta)) ** 2
    return losses, _reward(beta, policy_chosen_logps, ref_chosen_logps), _reward(beta, policy_rejected_logps, ref_rejected_logps)


def hinge_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
               ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """SLiC-HF hinge, Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback", eq. 1 with the reference-normalised margin of DPO: L = max(0, 1 - β h)."""
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    losses = torch.relu(1 - beta * logits)
    return losses, _reward(beta, policy_chosen_logps, ref_chosen_logps), _reward(beta, policy_rejected_logps, ref_rejected_logps)


def simpo_loss(policy_chosen_mean_logps: Tensor, policy_rejected_mean_logps: Tensor, beta: float,
               gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO, Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward", eq. 6: L = -log σ(β/|y_w| log π(y_w|x) - β/|y_l| log π(y_l|x) - γ).
    Inputs are MEAN per-token log-probs; no reference model. Rewards: β · mean log-prob."""
    chosen, rejected = beta * policy_chosen_mean_logps, beta * policy_rejected_mean_logps
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return losses, chosen.detach(), rejected.detach()


def cpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, policy_chosen_mean_logps: Tensor,
             beta: float, alpha: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """CPO, Xu et al. 2024, "Contrastive Preference Optimization", eq. 6:
    L = -log σ(β log π(y_w|x) - β log π(y_l|x)) + α · NLL(y_w), the NLL being the chosen
    response's mean token negative log-likelihood. Reference-free; rewards β · log π."""
    chosen, rejected = beta * policy_chosen_logps, beta * policy_rejected_logps
    losses = -F.logsigmoid(chosen - rejected) - alpha * policy_chosen_mean_logps
    return losses, chosen.detach(), rejected.detach()


def orpo_log_odds(policy_chosen_mean_logps: Tensor, policy_rejected_mean_logps: Tensor) -> Tensor:
    """log odds(y_w) - log odds(y_l), odds(y) = P / (1 - P) with log P the mean token log-prob;
    log(1 - P) = log1p(-exp(log P)) keeps precision when P is small."""
    def log_odds(lp: Tensor) -> Tensor:
        return lp - torch.log1p(-torch.exp(lp).clamp(max=1 - 1e-7))
    return log_odds(policy_chosen_mean_logps) - log_odds(policy_rejected_mean_logps)


def orpo_loss(policy_chosen_mean_logps: Tensor, policy_rejected_mean_logps: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """ORPO, Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
    eqs. 6-7: L = NLL(y_w) - λ log σ(log odds(y_w) - log odds(y_l)), λ = β, log-probs as means.
    Rewards (as TRL logs them): β · mean log-prob."""
    ratio = orpo_log_odds(policy_chosen_mean_logps, policy_rejected_mean_logps)
    losses = -policy_chosen_mean_logps - beta * F.logsigmoid(ratio)
    return losses, (beta * policy_chosen_mean_logps).detach(), (beta * policy_rejected_mean_logps).detach()


def kto_loss(policy_logps: Tensor, ref_logps: Tensor, labels: Tensor, kl: Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """KTO, Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 8:

        r = log π(y|x) - log π_ref(y|x),  z0 = max(0, KL estimate) (no gradient)
        desirable:   λ_D (1 - σ(β (r - z0)))      undesirable:   λ_U (1 - σ(β (z0 - r)))

    `labels` (B,) bool, `kl` the batch estimate of KL(π || π_ref) from mismatched (x, y') pairs.
    Returns (losses (B,), rewards β r (B,), detached)."""
    r = policy_logps - ref_logps
    z0 = kl.detach().clamp(min=0)
    good = 1 - torch.sigmoid(beta * (r - z0))
    bad = 1 - torch.sigmoid(beta * (z0 - r))
    losses = torch.where(labels, desirable_weight * good, undesirable_weight * bad)
    return losses, (beta * r).detach()


def bradley_terry_loss(chosen_scores: Tensor, rejected_scores: Tensor, margin: Tensor | None = None) -> Tensor:
    """Reward model loss, Bradley & Terry 1952 as used by Ouyang et al. 2022 (InstructGPT), eq. 1:
    L = -log σ(r(x, y_w) - r(x, y_l) [- m]), with the optional margin m of Llama 2 (Touvron 2023)."""
    diff = chosen_scores - rejected_scores
    return -F.logsigmoid(diff if margin is None else diff - margin)


def _reward(beta: float, policy_logps: Tensor, ref_logps: Tensor) -> Tensor:
    return (beta * (policy_logps - ref_logps)).detach()


# name -> (loss over a LogpBatch, needs a reference model). The lambdas only route fields.
PAIR_LOSSES = {
    "sigmoid": (lambda b, c: dpo_loss(b.chosen, b.rejected, b.ref_chosen, b.ref_rejected, c.beta, c.label_smoothing), True),
    "ipo": (lambda b, c: ipo_loss(b.chosen, b.rejected, b.ref_chosen, b.ref_rejected, c.beta), True),
    "hinge": (lambda b, c: hinge_loss(b.chosen, b.rejected, b.ref_chosen, b.ref_rejected, c.beta), True),
    "simpo": (lambda b, c: simpo_loss(b.chosen_mean, b.rejected_mean, c.beta, c.simpo_gamma), False),
    "cpo": (lambda b, c: cpo_loss(b.chosen, b.rejected, b.chosen_mean, c.beta, c.cpo_alpha), False),
    "orpo": (lambda b, c: orpo_loss(b.chosen_mean, b.rejected_mean, c.beta), False),
}
