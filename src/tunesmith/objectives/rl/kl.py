"""KL to the reference: per-token estimators and PPO's adaptive coefficient.

With samples y ~ pi and r = ref(y) / pi(y) (Schulman 2020, "Approximating KL divergence"):
k1 = -log r (unbiased, can be negative), k3 = (r - 1) - log r (unbiased, always >= 0, lower variance).
Both estimate KL(pi || ref) = E_pi[log pi - log ref].
"""

from __future__ import annotations

import math

from torch import Tensor


def kl_per_token(logps: Tensor, ref_logps: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate from the sampled tokens' log-probs under the policy and the reference."""
    log_ratio = ref_logps - logps  # log r
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return log_ratio.exp() - 1 - log_ratio
    raise ValueError(f"unknown kl_estimator {estimator!r}: use k1 or k3")


class AdaptiveKLController:
    """Ziegler et al. 2019 (sec. 2.2): beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon).

    `fixed` (target None) keeps beta. Its state (beta) is checkpointed through the objective's
    state hook so that a resumed run continues with the adapted value."""

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.beta *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state.get("beta", self.beta))
