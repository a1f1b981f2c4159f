"""`eval:` — `tunesmith eval` tasks, generation and the LLM judge."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Section


class JudgeConfig(_Section):
    mode: Literal["none", "single", "pairwise"] = Field(
        "none", description="single: grade each answer 1-10; pairwise: model vs --base, judged in both orders."
    )
    questions: str = Field("", description="JSONL of {question, reference?} (also prompt/instruction) the models answer for the judge.")
    endpoint: str = Field("", description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (or set `local`).")
    model: str = Field("", description="Model name sent to the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key.")
    local: str = Field("", description="A local model directory to judge with instead of an endpoint.")
    prompts: str = Field("", description="Directory with your own judge_single.txt / judge_pairwise.txt.")
    max_tokens: int = Field(512, gt=0)


class EvalConfig(_Section):
    tasks: dict[str, str] = Field(default_factory=dict, description="NAME: FILE; built-in readers by name (gsm8k, humaneval, mmlu, arc, hellaswag, mc) or a task YAML.")
    perplexity: list[str] = Field(default_factory=list, description="Data files (any supported format) to report loss/perplexity on; chat data on assistant tokens. Default with a run config: data.eval.")
    general: bool = Field(True, description="With a base: also compare perplexity on a general text set, to catch catastrophic forgetting.")
    general_data: list[str] = Field(default_factory=list, description="The general set (default: the built-in English corpus).")
    limit: int = Field(0, ge=0, description="Score only the first N examples of each task (0 = all).")
    few_shot: int = Field(0, ge=0, description="Built-in tasks: put the first N rows before each prompt as solved examples (they are not scored).")
    batch_size: int = Field(8, gt=0)
    max_new_tokens: int = Field(0, ge=0, description="Generation budget (0 = each task's default).")
    max_length: int = Field(2048, gt=8, description="Tokens per row for perplexity (longer text is split into blocks).")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding (always on when num_samples > 1).")
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0
    num_samples: int = Field(1, gt=0, description="Generations per code problem; pass@k needs num_samples >= k.")
    pass_k: list[int] = Field(default_factory=lambda: [1], description="k values of pass@k.")
    timeout_s: float = Field(10.0, gt=0, description="Wall-clock (and CPU) seconds per code test run.")
    memory_mb: int = Field(1024, gt=64, description="Address-space limit per code test run.")
    regression_threshold: float = Field(0.02, ge=0, description="Flag a regression past this: absolute for scores in [0,1], relative for loss/perplexity.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    harness: list[str] = Field(default_factory=list, description="lm-evaluation-harness task names (needs the harness extra).")
    harness_include: str = Field("", description="Directory of your own lm-eval task YAMLs (offline data).")

    @model_validator(mode="after")
    def _pass_k_fits(self) -> EvalConfig:
        if any(k < 1 for k in self.pass_k):
            raise ValueError("`eval.pass_k` values must be >= 1")
        if max(self.pass_k, default=1) > self.num_samples:
            raise ValueError(f"`eval.pass_k` {self.pass_k} needs `eval.num_samples` >= {max(self.pass_k)} generations per problem")
        return self

