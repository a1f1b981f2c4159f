"""Generated rows and their collation.

A `Sample` is one prompt + completion with everything the training step needs from the rollout:
the scalar advantage (GRPO, RLOO) or per-token advantages / returns / old values (PPO), old and
reference log-probs per completion token (when they are needed), and the per-row signals the step
reports as metrics (reward, each function's value, length, truncation, entropy).

`collate_samples` lays the completions of one prompt (a GRPO / RLOO group: consecutive rows with
the same prompt ids) out as one block [prompt | completion 1 | ... | completion G]: each completion's
positions restart where the prompt ends and a 4D attention mask lets it see the prompt and itself,
never its siblings, so the prompt goes through the forward (and the backward) once per group instead
of G times; the math is that of G separate rows (tests/unit/test_rl_batch.py). `segment_blocks`
describes the same layout as (row, start, end, prefix_start, prefix_end) blocks ([prompt | c1] causal,
each later completion a branch of the prompt), which the CPU's segment attention runs without the
mask (train/segment_attention.py; `mask_free=True`): then sharing always pays. Where the dense mask
is what runs, a group is split into separate rows when that is cheaper: its block's attention (T^2)
against the prompt tokens saved (`_share_prompt`); and always with flash-attention-2, which takes no 4D
mask (it would read the restarting positions as one sequence). Blocks are right-padded (padding attends to itself only;
without any shared block there is no mask at all: padding then sits after every real token, which
the causal mask already hides). `src` lists the hidden row (flat index into the (rows, T) block
layout) that predicts each completion token, `tgt` the token, and a (B, C) `mask` over completion
positions, B = completions, in the same row-major order, so `logps[mask] = flat` puts them back.
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


# Per token, a decoder layer's linear maps cost ~(8H + 6I) / 4H times its attention per position
# attended: ~1,500 for the tiny bench model, ~3,500 for SmolLM2; the smaller value errs towards rows.
_LINEAR_OVER_ATTENTION = 1024


def _share_prompt(prompt_len: int, completion_lens: list[int]) -> bool:
    """Whether one block [prompt | c1 | ... | cG] costs less than G rows [prompt | ci]: tokens through
    the linear maps plus the attention of every position over its row (a masked block attends densely)."""
    cost = lambda T: T + T * T / _LINEAR_OVER_ATTENTION  # noqa: E731
    return cost(prompt_len + sum(completion_lens)) < sum(cost(prompt_len + n) for n in completion_lens)


def _blocks(rows: list[Sample], share_prompts: bool, mask_free: bool = False) -> list[list[int]]:
    """Runs of consecutive rows with the same prompt, one block each where sharing it pays."""
    runs: list[list[int]] = []
    for i, r in enumerate(rows):
        if share_prompts and runs and rows[runs[-1][0]].prompt_ids == r.prompt_ids:
            runs[-1].append(i)
        else:
            runs.append([i])
    out = []
    for run in runs:
        share = len(run) > 1 and (mask_free or _share_prompt(len(rows[run[0]].prompt_ids),
                                                            [len(rows[i].completion_ids) for i in run]))
        out += [run] if share else [[i] for i in run]
    return out


def collate_samples(rows: list[Sample], pad_id: int, share_prompts: bool = True,
                    mask_free: bool = False) -> dict[str, torch.Tensor]:
    """`share_prompts=False`: one row per completion (attention kernels that cannot take a 4D mask).
    `mask_free=True`: the forward will run the blocks without the mask (segment attention), so every
    group shares its prompt."""
    B = len(rows)
    blocks = _blocks(rows, share_prompts, mask_free)
    lengths = [len(rows[b[0]].prompt_ids) + sum(len(rows[i].completion_ids) for i in b) for b in blocks]
    T = max(lengths)
    C = max(max(len(r.completion_ids) for r in rows), 1)
    ids = torch.full((len(blocks), T), pad_id, dtype=torch.long)
    position_ids = torch.arange(T).expand(len(blocks), T).contiguous()
    shared = any(len(b) > 1 for b in blocks)
    attn = torch.eye(T, dtype=torch.bool).repeat(len(blocks), 1, 1) if shared else None  # padding sees itself
    mask = torch.zeros((B, C), dtype=torch.bool)
    src: list[list[int]] = [[] for _ in rows]
    tgt: list[list[int]] = [[] for _ in rows]
    seg_blocks: list[tuple[int, int, int, int, int]] = []
    for row, block in enumerate(blocks):
        prompt = rows[block[0]].prompt_ids
        P = len(prompt)
        ids[row, :P] = torch.tensor(prompt)
        if attn is not None:
            attn[row, :P, :P] = torch.ones(P, P, dtype=torch.bool).tril()
        o = P
        for k, i in enumerate(block):
            comp = rows[i].completion_ids
            n = len(comp)
            ids[row, o : o + n] = torch.tensor(comp, dtype=torch.long)
            position_ids[row, o : o + n] = torch.arange(P, P + n)
            if attn is not None:
                attn[row, o : o + n, :P] = True
                attn[row, o : o + n, o : o + n] = torch.ones(n, n, dtype=torch.bool).tril()
            mask[i, :n] = True
            # [prompt | first completion] is one causal block; later ones see the prompt, then themselves.
            seg_blocks.append((row, 0, o + n, 0, 0) if k == 0 else (row, o, o + n, 0, P))
            # Token 0 is predicted from the prompt's last position, token k > 0 from the one before it.
            src[i] = [row * T + P - 1] + [row * T + o + k for k in range(n - 1)] if n else []
            tgt[i] = comp
            o += n
        if attn is not None:
            position_ids[row, o:] = torch.arange(T - o)  # padding: any position, it attends to itself only
    src = [x for s in src for x in s]
    tgt = [x for t in tgt for x in t]
    out = {"input_ids": ids, "position_ids": position_ids, "mask": mask,
           "src": torch.tensor(src, dtype=torch.long), "tgt": torch.tensor(tgt, dtype=torch.long),
           "advantage": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
           "reward": torch.tensor([r.reward for r in rows], dtype=torch.float32),
           "reward_std": torch.tensor([r.reward_std for r in rows], dtype=torch.float32),
           "zero_std": torch.tensor([float(r.zero_std) for r in rows]),
           "truncated": torch.tensor([float(r.truncated) for r in rows]),
           "train": torch.tensor([r.train for r in rows], dtype=torch.bool),
           "kl_rollout": torch.tensor([r.kl for r in rows], dtype=torch.float32)}
    if attn is not None:
        out["attention_mask"] = attn[:, None]  # (rows, 1, T, T), True = may attend
        out["segment_blocks"] = torch.tensor(seg_blocks, dtype=torch.long).view(-1, 5)
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
