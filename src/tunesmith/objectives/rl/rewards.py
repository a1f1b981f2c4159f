"""Reward functions: built-ins, user Python functions and trained reward models, by config.

Every reward has the user-function signature `f(prompts, completions, **columns) -> list[float]`:
`prompts` the prompt texts (the user turn), `completions` the generated texts, and one list per
extra data column (e.g. `answer`) aligned with them. `rl.rewards` lists them; `build_rewards`
resolves each spec once, before the first step, so a typo fails before any weight is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Callable

import yaml

from ...errors import ConfigError
from ...evaluate.metrics import answers_match, extract_answer, json_scores

RewardFn = Callable[..., list[float]]


def gsm8k_reward(prompts, completions, answer=None, **_) -> list[float]:
    """1 when the completion's final answer (eval's gsm8k extraction: the number after the last
    `####`, else the last number) equals the row's `answer` (its own `#### N` or a plain number)."""
    if answer is None:
        raise ConfigError("reward `gsm8k` needs an `answer` column in the data (map it with data.columns: {answer: ...})")
    out = []
    for c, a in zip(completions, answer):
        target = extract_answer(str(a), "gsm8k")
        out.append(float(target is not None and answers_match(extract_answer(c, "gsm8k"), target)))
    return out


def regex_reward(pattern: str) -> RewardFn:
    import re

    rx = re.compile(pattern)

    def regex(prompts, completions, **_) -> list[float]:
        return [float(rx.search(c) is not None) for c in completions]
    return regex


def json_schema_reward(schema: dict | None) -> RewardFn:
    def json_schema(prompts, completions, **_) -> list[float]:
        key = "schema_match" if schema is not None else "json_valid"
        return [json_scores(c, schema)[key] for c in completions]
    return json_schema


def length_reward(target: int) -> RewardFn:
    def length(prompts, completions, **_) -> list[float]:
        return [max(-1.0, 1 - abs(len(c) - target) / target) for c in completions]
    return length


def _user_function(spec: str) -> RewardFn:
    module, _, name = spec.partition(":")
    path = Path(module)
    try:
        if module.endswith(".py") or path.with_suffix(".py").is_file():
            file = path if module.endswith(".py") else path.with_suffix(".py")
            loader = importlib.util.spec_from_file_location(f"tunesmith_reward_{file.stem}", file)
            mod = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = mod
            loader.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
    except (ImportError, FileNotFoundError) as e:
        raise ConfigError(f"`rl.rewards`: cannot import {module!r} for {spec!r} ({e}); give a file path (my_rewards.py:fn) "
                          "relative to the working directory, or an importable module") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ConfigError(f"`rl.rewards`: {module!r} has no function {name!r} (spec {spec!r})")
    return fn


class RewardModelReward:
    """A `method: reward` run scoring (prompt, completion) with its own tokenizer and chat template.

    `debias_length` (true: the reward run's own `data.train`; or a preference-pairs file): reward models
    pick up length as a feature (RM scores correlate with length, Singhal et al. 2023), and RL then
    optimises the length instead of the content: completions grow, or, on HH-RLHF's harmless pairs,
    collapse to a few words. The score's slope per response token is fitted on up to 256 pairs (the
    within-pair gaps, so the prompt cancels: `tunesmith.score.length_bias`) and slope x tokens is
    subtracted from every score, which makes the reward length-neutral on those pairs, to first order."""

    FIT_PAIRS = 256

    def __init__(self, run_dir: str, device, debias_length: bool | str = False):
        from ...score import load_reward_model

        self.model, self.tok = load_reward_model(run_dir)
        self.model.to(device)
        self.model.requires_grad_(False)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.__name__ = f"reward_model:{Path(run_dir).name}"
        self.slope = 0.0
        if debias_length:
            self.slope = self._fit_slope(run_dir, debias_length)
            self.__name__ += ":debiased"

    def _fit_slope(self, run_dir: str, source: bool | str) -> float:
        from ...console import say
        from ...score import length_bias, pair_items, score_flat

        files = [Path(source)] if isinstance(source, str) else _training_data(run_dir)
        items: list = []
        for data in files:
            if not data.is_file():
                raise ConfigError(f"`rl.rewards`: debias_length: {data} is not a file; give the preference pairs to fit "
                                  f"the length slope on: {{reward_model: {run_dir}, debias_length: PAIRS.jsonl}}")
            if len(items) < self.FIT_PAIRS:
                items += [it for it in pair_items(self.tok, data, limit=self.FIT_PAIRS - len(items)) if it[2]]
        data = ", ".join(map(str, files))
        scores = score_flat(self.model, [s for _, seqs, _ in items for s in seqs], self.pad_id)
        bias = length_bias([(scores[2 * i] - scores[2 * i + 1], len(c) - len(r)) for i, (_, (c, r), _) in enumerate(items)])
        if bias is None:
            raise ConfigError(f"`rl.rewards`: debias_length: {data} has fewer than 2 preference pairs whose responses differ "
                              "in length; the slope cannot be fitted: give other pairs or drop debias_length")
        say(f"{self.__name__}: score {100 * bias['slope']:+.3f} per 100 response tokens on {bias['pairs']} pairs of {data} "
            f"(corr(score gap, token gap) {bias['corr']:+.2f}; longer scored higher in {bias['prefers_longer']:.0%}); "
            "debias_length subtracts it")
        return bias["slope"]

    def __call__(self, prompts, completions, prompt_messages=None, **_) -> list[float]:
        from ...data.preference_encode import encode_prompt, encode_response
        from ...score import score_ids

        msgs = prompt_messages or [[{"role": "user", "content": p}] for p in prompts]
        # The completion as the assistant turn, rendered with the reward model's own template, as
        # `tunesmith score` renders a {prompt, response} row (score._encode, kept in its two parts here
        # because debias_length needs the response's token count).
        seqs, n = [], []
        for m, c in zip(msgs, completions):
            text, p_ids = encode_prompt(self.tok, m, "rollout")
            r_ids = encode_response(self.tok, m, text, p_ids, [{"role": "assistant", "content": c}], "rollout")
            seqs.append(p_ids + r_ids)
            n.append(len(r_ids))
        scores = score_ids(self.model, seqs, self.pad_id).tolist()
        return [x - self.slope * k for x, k in zip(scores, n)] if self.slope else scores


def _training_data(run_dir: str) -> list[Path]:
    """The `data.train` files of a reward run (its config.yaml), for `debias_length: true`."""
    cfg = Path(run_dir) / "config.yaml"
    try:
        train = ((yaml.safe_load(cfg.read_text()) or {}).get("data") or {}).get("train")
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"`rl.rewards`: debias_length: true reads the reward run's data.train from {cfg}: {e}; "
                          "give the pairs file instead: debias_length: PAIRS.jsonl") from e
    train = [train] if isinstance(train, str) else train
    if not train or not isinstance(train, list) or not all(isinstance(t, str) for t in train):
        raise ConfigError(f"`rl.rewards`: debias_length: true: {cfg} names no data.train files; give the pairs "
                          "file instead: debias_length: PAIRS.jsonl")
    return [Path(t) for t in train]


def build_rewards(cfg_rl, device) -> list[tuple[str, RewardFn]]:
    """[(name, function)] in `rl.rewards` order."""
    out: list[tuple[str, RewardFn]] = []
    for spec in cfg_rl.rewards:
        if isinstance(spec, dict):
            fn = RewardModelReward(spec["reward_model"], device, spec.get("debias_length", False))
            out.append((fn.__name__, fn))
        elif spec == "gsm8k":
            out.append(("gsm8k", gsm8k_reward))
        elif spec == "regex":
            out.append(("regex", regex_reward(cfg_rl.regex)))
        elif spec == "json_schema":
            out.append(("json_schema", json_schema_reward(cfg_rl.json_schema)))
        elif spec == "length":
            out.append(("length", length_reward(cfg_rl.target_length)))
        elif ":" in spec:
            out.append((spec.rpartition(":")[2], _user_function(spec)))
        else:
            raise ConfigError(f"`rl.rewards`: unknown reward {spec!r}; built-ins are gsm8k, regex, json_schema, length; "
                              "or give module:function or {reward_model: RUN_DIR}")
    return out


def score_all(rewards: list[tuple[str, RewardFn]], weights: list[float], prompts: list[str], completions: list[str],
              columns: dict[str, list]) -> tuple[list[float], dict[str, list[float]]]:
    """The weighted total per completion and each function's own values; a wrong length or a
    non-finite value is an error naming the function."""
    per: dict[str, list[float]] = {}
    total = [0.0] * len(completions)
    for (name, fn), w in zip(rewards, weights):
        values = [float(v) for v in fn(prompts, completions, **columns)]
        if len(values) != len(completions):
            raise ConfigError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"reward {name!r} returned a non-finite value; rewards must be finite floats")
        per[name] = values
        total = [t + w * v for t, v in zip(total, values)]
    return total, per
