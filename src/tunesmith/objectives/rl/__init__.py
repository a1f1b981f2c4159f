"""Online RL objectives: generation inside the training loop (GRPO, RLOO, PPO)."""

from .grpo import GRPOObjective
from .ppo import PPOObjective
from .rloo import RLOOObjective

__all__ = ["GRPOObjective", "PPOObjective", "RLOOObjective"]
