"""Generated rows and their collation.

A `Sample` is one prompt + completion with everything the training step needs from the rollout:
the scalar advantage (GRPO, RLOO) or per-token advantages / returns / old values (PPO), old and
reference log-probs per completion token (when they are needed), and the per-row signals the step
reports as metrics (reward, each function's value, length, truncation, entropy).

`collate` right-pads the rows (real tokens never attend to later padding under the causal mask,
so no attention mask) and lists the hidden rows that predict each completion token: `src` (flat
index into the (B, T) rows), `tgt` (the token), and a (B, C) `mask` over completion positions in
the same row-major order, so `logps[mask] = flat` puts them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PER_TOKEN = ("old_logps", "ref_logps", "entropy", "advantages", "returns", "old_values", "rewards")


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    truncated: bool
    advantage: float = 0.0
    reward: float = 0.0
    rewards: dict = field(default_factory=dict)  # each reward function's value
    zero_std: bool = False  # its group's rewards were all equal (no gradient)
    reward_std: float = 0.0  # std of this step's rewards on this process (logged)
    kl: float = 0.0  # sum over tokens of the KL estimate at rollout time
    tokens: dict = field(default_factory=dict)  # PER_TOKEN name -> list[float] of completion length
    train: bool = True  # False: masked out (mask_truncated)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def collate_samples(rows: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    B = len(rows)
    T = max(len(r) for r in rows)
    C = max(max(len(r.completion_ids) for r in rows), 1)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, C), dtype=torch.bool)
    src, tgt = [], []
    for b, r in enumerate(rows):
        seq = r.prompt_ids + r.completion_ids
        ids[b, : len(seq)] = torch.tensor(seq)
        P, n = len(r.prompt_ids), len(r.completion_ids)
        mask[b, :n] = True
        src += [b * T + P - 1 + k for k in range(n)]  # position P-1+k predicts completion token k
        tgt += r.completion_ids
    out = {"input_ids": ids, "position_ids": torch.arange(T).expand(B, T).contiguous(), "mask": mask,
           "src": torch.tensor(src, dtype=torch.long), "tgt": torch.tensor(tgt, dtype=torch.long),
           "advantage": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
           "reward": torch.tensor([r.reward for r in rows], dtype=torch.float32),
           "reward_std": torch.tensor([r.reward_std for r in rows], dtype=torch.float32),
           "zero_std": torch.tensor([float(r.zero_std) for r in rows]),
           "truncated": torch.tensor([float(r.truncated) for r in rows]),
           "train": torch.tensor([r.train for r in rows], dtype=torch.bool),
           "kl_rollout": torch.tensor([r.kl for r in rows], dtype=torch.float32)}
    for name in rows[0].rewards:
        out[f"rewards/{name}"] = torch.tensor([r.rewards[name] for r in rows], dtype=torch.float32)
    for name in PER_TOKEN:
        if name in rows[0].tokens:
            t = torch.zeros((B, C), dtype=torch.float32)
            for b, r in enumerate(rows):
                t[b, : len(r.completion_ids)] = torch.tensor(r.tokens[name], dtype=torch.float32)
            out[name] = t
    return out


def unflatten(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) values in `src` order -> (B, C) with zeros at padding."""
    out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    out[mask] = flat
    return out
