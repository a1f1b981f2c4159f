"""Training objectives, chosen by name from OBJECTIVES: the loop never branches on the method.
Every objective implements the hooks of `Objective` (base.py), which documents when each is called."""

from .base import Objective, SetupContext
from .kto import KTOObjective
from .preference import DPOObjective, RewardObjective
from .rl import GRPOObjective, PPOObjective, RLOOObjective
from .sft import CausalLMObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "sft": CausalLMObjective,
    "pretrain": CausalLMObjective,
    "reward": RewardObjective,
    "dpo": DPOObjective,
    "kto": KTOObjective,
    "grpo": GRPOObjective,
    "rloo": RLOOObjective,
    "ppo": PPOObjective,
}

__all__ = ["OBJECTIVES", "Objective", "SetupContext", "get_objective"]


def get_objective(method: str, cfg) -> Objective:
    return OBJECTIVES[method](cfg)
