"""What every online-RL objective (GRPO, RLOO, PPO) shares: prompt data, the policy module, the
reference, and the rollout (generate -> score -> reward -> advantages), in the hooks of
objectives/base.py. Subclasses give `advantages` and `step`.

Per optimizer step, `rollout` receives this process's micro-batches of prompt rows and returns one
micro-batch of `num_generations` completions per prompt for each: every process returns as many
micro-batches as it received, as the loop requires. With `num_iterations` (or `ppo_epochs`) > 1 the
same generated batch is returned for that many steps (old log-probs then come from the rollout);
`train.save_every` is a multiple of it (config/rl.py), so a checkpoint never falls inside one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ...train import segment_attention
from ...train.forward import base_causal_lm
from ..base import Objective, SetupContext
from ..reference import adapter_disabled, inner
from .batch import Sample, collate_samples, unflatten
from .data import prepare_prompts
from .kl import kl_per_token
from .policy import CompletionLogps, score_tokens
from .report import rl_report_sections, write_samples
from .rewards import build_rewards, score_all
from .rollout.generation import sample


class OnlineRLObjective(Objective):
    value_head = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rl = cfg.rl
        self._cache: tuple[int, list] | None = None
        self.frozen_ref = None
        self.vllm = None

    # --- hooks -------------------------------------------------------------------------------------

    def prepare_data(self, tokenizer, seed: int):
        return prepare_prompts(self.cfg, tokenizer)

    def wrap(self, model):
        return CompletionLogps(model, self.cfg.train.loss_chunk_size, self.rl.temperature, self.value_head)

    def setup(self, ctx: SetupContext) -> None:
        self.ctx = ctx
        self.rewards = build_rewards(self.rl, ctx.device)
        tok = ctx.tokenizer
        eos = {tok.eos_token_id}
        im_end = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else None
        if im_end is not None:
            eos.add(im_end)  # ChatML ends a turn with <|im_end|> (the tiny model's EOS; SmolLM2's turn end)
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.has_adapter = adapter_disabled(ctx.wrapper) is not None
        if not self.has_adapter and self.needs_reference():
            self.frozen_ref = copy.deepcopy(inner(ctx.wrapper)).eval().requires_grad_(False)
        if self.rl.generator == "vllm":
            from .rollout.vllm_generator import VLLMGenerator

            self.vllm = VLLMGenerator(self.cfg, ctx, self.eos_ids)

    def needs_reference(self) -> bool:
        return self.rl.beta > 0

    def collate(self, rows, pad_id: int) -> dict:
        return collate_samples(rows, pad_id, self.share_prompts(), self.mask_free())

    def share_prompts(self) -> bool:
        """A group's prompt once in the forward (batch.py) needs a 4D mask, which flash-attention-2 cannot take."""
        return self.cfg.model.attn_implementation != "flash_attention_2"

    def mask_free(self) -> bool:
        """Whether the policy's forward runs shared-prompt blocks without the 4D mask (CPU segment attention)."""
        ctx = getattr(self, "ctx", None)
        if ctx is None:
            return False
        return segment_attention.applies(base_causal_lm(inner(ctx.wrapper).model).get_decoder(), torch.device(ctx.device).type)

    def rollout(self, policy, micro_batches, step):
        start = step - step % self.reuse()
        if self._cache is not None and self._cache[0] == start:
            return self._cache[1]
        if step != start:  # resumed inside a reused batch: regenerate from the batch's own step (same seed)
            step = start
        out = self._generate(policy, micro_batches, step)
        self._cache = (start, out)
        return out

    def reuse(self) -> int:
        return self.rl.num_iterations

    def report_sections(self, run_dir: Path) -> list[tuple[str, str]]:
        return rl_report_sections(Path(run_dir), self.cfg.method)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # --- rollout -----------------------------------------------------------------------------------

    def _generate(self, policy, micro_batches, step) -> list[list[Sample]]:
        G, ctx = self.rl.num_generations, self.ctx
        prompts = [row for mb in micro_batches for row in mb for _ in range(G)]
        first_row = ctx.process_index * len(prompts)
        if self.vllm is not None:
            done = self.vllm.sample(policy, [p.ids for p in prompts], step=step, first_row=first_row)
        else:
            done = sample(policy.model, [p.ids for p in prompts], tokenizer=ctx.tokenizer, eos_ids=self.eos_ids,
                          pad_id=ctx.pad_id, max_new_tokens=self.rl.max_new_tokens, temperature=self.rl.temperature,
                          top_p=self.rl.top_p, stop=self.rl.stop, seed=self.cfg.train.seed, step=step, first_row=first_row)
        samples = [Sample(p.ids, c.ids, c.truncated) for p, c in zip(prompts, done)]
        texts = [ctx.tokenizer.decode(c.ids, skip_special_tokens=True) for c in done]
        self._score_tokens(policy, samples, step)
        columns = {k: [p.columns.get(k) for p in prompts] for k in {k for p in prompts for k in p.columns}}
        columns["prompt_messages"] = [p.messages for p in prompts]
        total, per = score_all(self.rewards, self.rl.weights(), [p.text for p in prompts], texts, columns)
        for i, s in enumerate(samples):
            s.reward, s.rewards = total[i], {k: v[i] for k, v in per.items()}
        self.advantages(samples)
        if self.rl.mask_truncated:
            for s in samples:
                s.train = not s.truncated
        if ctx.process_index == 0 and self.rl.samples_every and step % self.rl.samples_every == 0:
            write_samples(Path(self.cfg.output_dir) / "samples.jsonl", step + 1, prompts, texts, samples)
        per_mb = [len(mb) * G for mb in micro_batches]
        bounds = [sum(per_mb[:i]) for i in range(len(per_mb) + 1)]
        return [samples[bounds[i]: bounds[i + 1]] for i in range(len(per_mb))]

    def _passes(self, step: int) -> tuple[bool, bool]:
        """(policy pass, reference pass) this rollout needs. The policy's rollout-time log-probs are
        needed only when the step cannot recompute them: a reused batch (num_iterations / ppo_epochs > 1:
        the ratio's old log-probs), PPO (its values and per-token KL penalty) and the KL subtracted from
        the reward; at num_iterations 1 they equal the training forward's, detached. The reference runs
        when training uses it (beta > 0), else only every `rl.kl_every` steps, for the logged `kl`."""
        policy = self.value_head or self.reuse() > 1 or (self.rl.beta > 0 and self.rl.kl_in == "reward")
        ref = self.needs_reference() or (self.rl.kl_every > 0 and step % self.rl.kl_every == 0)
        return policy, ref

    def _score_tokens(self, policy, samples: list[Sample], step: int) -> None:
        """Rollout-time log-probs, entropy (and values) of the policy and the reference's log-probs,
        as far as `_passes` asks for them, one micro-batch-sized chunk at a time, under the run's autocast."""
        need_policy, need_ref = self._passes(step)
        if not (need_policy or need_ref):
            return
        n = max(1, self.cfg.train.micro_batch_size * self.rl.num_generations)
        was_training = policy.training
        policy.eval()
        try:
            for s in range(0, len(samples), n):
                rows = samples[s : s + n]
                batch = {k: v.to(self.ctx.device) for k, v in collate_samples(rows, self.ctx.pad_id, self.share_prompts(),
                                                                               self.mask_free()).items()}
                with self.ctx.autocast():
                    logps, ent, values = score_tokens(policy, batch) if need_policy else (None, None, None)
                    ref = self._ref_logps(policy, batch) if need_ref else None
                if logps is not None:
                    self._store(rows, batch["mask"], "old_logps", logps)
                    self._store(rows, batch["mask"], "entropy", ent)
                if values is not None:
                    self._store(rows, batch["mask"], "old_values", values)
                if ref is not None:
                    self._store(rows, batch["mask"], "ref_logps", ref)
                if ref is not None and logps is not None:
                    kl = kl_per_token(logps, ref, self.rl.kl_estimator)
                    for r, k in zip(rows, unflatten(kl, batch["mask"]).sum(1).tolist()):
                        r.kl = k
        finally:
            policy.train(was_training)

    def _ref_logps(self, policy, batch) -> torch.Tensor | None:
        """The reference: the base with the adapter disabled (LoRA, no copy; always available, so KL
        is logged even at beta 0), or the frozen copy made at setup (full fine-tuning, beta > 0)."""
        if self.frozen_ref is not None:
            return score_tokens(self.frozen_ref, batch)[0]
        if not self.has_adapter:
            return None
        with adapter_disabled(policy):
            return score_tokens(policy, batch)[0]

    @staticmethod
    def _store(rows: list[Sample], mask, name: str, flat) -> None:
        full = unflatten(flat.float(), mask).cpu()
        for b, r in enumerate(rows):
            r.tokens[name] = full[b, : len(r.completion_ids)].tolist()

    def advantages(self, samples: list[Sample]) -> None:
        raise NotImplementedError

    def metrics_of(self, batch: dict, mask, logps, clipped, entropy=None) -> dict:
        """Per-step signals from the rows (loop adds sums and counts over micro-batches and processes).
        `entropy` (B, C): the training forward's; else the rollout's, when that pass ran."""
        B, n_tok = len(batch["reward"]), int(batch["mask"].sum())
        s = lambda t: float(t.detach().float().sum())  # noqa: E731
        m = {"reward": (s(batch["reward"]), B), "reward_std": (s(batch["reward_std"]), B),
             "zero_std_fraction": (s(batch["zero_std"]), B), "truncated_fraction": (s(batch["truncated"]), B),
             "completion_length": (s(batch["mask"]), B), "clip_fraction": (s(clipped & mask), max(1, int(mask.sum())))}
        entropy = entropy if entropy is not None else batch.get("entropy")
        if entropy is not None:
            m["entropy"] = (s(entropy * batch["mask"]), n_tok)
        for k in batch:
            if k.startswith("rewards/"):
                m[k] = (s(batch[k]), B)
        if "ref_logps" in batch:
            kl = kl_per_token(logps.detach(), batch["ref_logps"], self.rl.kl_estimator)
            m["kl"] = (s(kl * batch["mask"]), n_tok)
            m["kl_sequence"] = (s(kl * batch["mask"]), B)  # per completion: the adaptive controller's unit
        return m

