"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with the leave-one-out baseline.

Each completion's baseline is the mean reward of the other k - 1 completions of its prompt; there
is no std scaling and no value head. Everything else (KL in the reward or the loss, the clipped
ratio when a generation batch is reused, the loss aggregation) is GRPO's code.
"""

from __future__ import annotations

import torch

from .advantages import rloo_advantages
from .grpo import GRPOObjective


class RLOOObjective(GRPOObjective):
    def group_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return rloo_advantages(rewards, self.rl.num_generations)
