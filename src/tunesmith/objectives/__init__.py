"""Training objectives. Each contributes `loss_units(batch)` (what the step's loss is normalised by)
and `step(model, batch) -> (summed loss, metrics)`; the shared loop does everything else.
Chosen by name from OBJECTIVES: the loop never branches on the method."""

from .preference import DPOObjective, KTOObjective, RewardObjective
from .sft import CausalLMObjective

OBJECTIVES = {
    "sft": CausalLMObjective,
    "pretrain": CausalLMObjective,
    "reward": RewardObjective,
    "dpo": DPOObjective,
    "kto": KTOObjective,
}


def get_objective(method: str, cfg):
    return OBJECTIVES[method](cfg)
