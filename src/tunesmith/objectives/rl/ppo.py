"""PPO for language models the classic way (Ziegler et al. 2019; Ouyang et al. 2022; Stiennon et al. 2020).

Rollout: sample completions, score each with the rewards (typically `{reward_model: RUN_DIR}`),
and build per-token rewards: -beta * KL_t at every completion token, plus the score at the last real
token. beta is fixed, or adapted toward `rl.kl_target` by `AdaptiveKLController` (its value is
checkpointed through the objective's state hook). Values come from a scalar value head on the
policy's last hidden state (a trainable Linear in the wrapper): it is in every checkpoint (restored
by --resume), and saved with the result as `value_head.safetensors` beside the adapter / model, so
that PPO continued from a full fine-tuning result (`model.path: RUN/model`) starts with the trained
critic instead of a zero one. GAE gives per-token advantages (optionally
whitened over the batch) and returns. The step: clipped surrogate + vf_coef * clipped value loss,
token-level over the step's completion tokens; the same rollout batch serves `ppo_epochs` steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .advantages import gae, whiten
from .batch import Sample, unflatten
from .kl import AdaptiveKLController, kl_per_token
from .losses import clipped_surrogate, clipped_value_loss
from ...console import say
from ...errors import ConfigError
from .online import OnlineRLObjective

VALUE_HEAD_FILE = "value_head.safetensors"


class PPOObjective(OnlineRLObjective):
    value_head = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kl_ctl = AdaptiveKLController(self.rl.beta, self.rl.kl_target, self.rl.kl_horizon)

    def needs_reference(self) -> bool:
        return self.rl.beta > 0 or self.rl.kl_target is not None

    def reuse(self) -> int:
        return self.rl.ppo_epochs

    def wrap(self, model):
        wrapper = super().wrap(model)
        saved = Path(self.cfg.model.path) / VALUE_HEAD_FILE
        if saved.is_file():  # model.path is a PPO result: continue with its critic
            tensors = load_file(str(saved))
            head = wrapper.value_head
            want = {k: tuple(v.shape) for k, v in head.state_dict().items()}
            if {k: tuple(v.shape) for k, v in tensors.items()} != want:
                raise ConfigError(f"{saved} does not fit this model's value head {want}; it was saved for another "
                                  "model: remove it (the value head then starts from zero) or point model.path elsewhere")
            head.load_state_dict(tensors)
            say(f"ppo: value head loaded from {saved}")
        return wrapper

    def result_tensors(self, wrapper, full_state=None) -> dict:
        if full_state is not None:
            return {VALUE_HEAD_FILE: {k.removeprefix("value_head."): v for k, v in full_state.items() if k.startswith("value_head.")}}
        return {VALUE_HEAD_FILE: dict(wrapper.value_head.state_dict())}

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state.get("kl_ctl", {}))

    def advantages(self, samples: list[Sample]) -> None:
        B, C = len(samples), max(len(s.completion_ids) for s in samples)
        mask = torch.zeros(B, C)
        rewards, values = torch.zeros(B, C), torch.zeros(B, C)
        beta = self.kl_ctl.beta
        for b, s in enumerate(samples):
            n = len(s.completion_ids)
            mask[b, :n] = 1
            values[b, :n] = torch.tensor(s.tokens["old_values"])
            if "ref_logps" in s.tokens:
                kl = kl_per_token(torch.tensor(s.tokens["old_logps"]), torch.tensor(s.tokens["ref_logps"]), self.rl.kl_estimator)
                rewards[b, :n] = -beta * kl
            rewards[b, n - 1] += s.reward
        adv, ret = gae(rewards, values, mask, self.rl.gamma, self.rl.lam)
        if self.rl.whiten_advantages:
            adv = whiten(adv, mask)
        for b, s in enumerate(samples):
            n = len(s.completion_ids)
            s.tokens["advantages"], s.tokens["returns"] = adv[b, :n].tolist(), ret[b, :n].tolist()
            s.advantage = float(adv[b, :n].mean())
        r = torch.tensor([s.reward for s in samples])
        for s in samples:
            s.reward_std = float(r.std()) if B > 1 else 0.0
        self.kl_ctl.update(sum(s.kl for s in samples) / B, B)

    def loss_units(self, batch: dict) -> int:
        return max(1, int((batch["mask"] & batch["train"][:, None]).sum()))

    def step(self, model, batch: dict):
        mask = batch["mask"]
        flat_logps, flat_values = model(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"],
                                         attention_mask=batch.get("attention_mask"),
                                         segment_blocks=batch.get("segment_blocks"))
        logps, values = unflatten(flat_logps, mask), unflatten(flat_values, mask)
        old = batch["old_logps"] if self.reuse() > 1 else logps.detach()
        pg, clipped = clipped_surrogate(logps, old, batch["advantages"], self.rl.epsilon, self.rl.clip_high())
        vl, v_clipped = clipped_value_loss(values, batch["old_values"], batch["returns"], self.rl.cliprange_value)
        train_mask = mask & batch["train"][:, None]
        m = train_mask.to(pg.dtype)
        loss = ((pg + self.rl.vf_coef * vl) * m).sum()
        metrics = self.metrics_of(batch, train_mask, logps, clipped)
        n = max(1, int(train_mask.sum()))
        s = lambda t: float(t.detach().float().sum())  # noqa: E731
        metrics.update({"value_loss": (s(vl * m), n), "value_clip_fraction": (s(v_clipped & train_mask), n),
                        "approx_kl": (s(0.5 * (logps - old) ** 2 * m), n), "beta": (self.kl_ctl.beta * len(mask), len(mask))})
        return loss, metrics
