"""Online RL objectives: generation inside the training loop (GRPO, RLOO, PPO)."""

from .grpo import GRPOObjective
from .rloo import RLOOObjective

__all__ = ["GRPOObjective", "RLOOObjective"]
