"""`tunesmith eval`: score a model (and its base) on perplexity, tasks, a judge and the harness.

Order matters for a person waiting: everything that can be wrong with the input (config, task files,
judge prompts, the output directory) is checked before any weights load. Then the model under test
is scored, then the base (a fresh load: PEFT injects LoRA layers into the base in place), then the
judge, then lm-eval. Results go into a temp directory renamed into place at the end, so an
interrupted eval never leaves a half report behind, and an existing one is kept unless --overwrite.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig, EvalConfig, ModelConfig, load_config, parse_overrides, validate_config, merge_dicts
from ..errors import UserError
from ..console import say
from ..io import atomic_dir
from .compare import compare, side_scores
from .runner import GenOptions, run_task
from .tasks import Task, load_task


@dataclass
class Target:
    label: str  # "model" | "base"
    path: str
    adapter: str = ""


@dataclass
class Plan:
    model: Target
    base: Target | None
    cfg: EvalConfig
    out: Path
    run_dir: Path | None = None
    dtype: str = "auto"
    chat_template: str = "auto"
    tasks: list[Task] = field(default_factory=list)


def _plan(config, overrides, model, adapter, base, tasks, out) -> Plan:
    """Resolve what to score from a run config and/or --model/--adapter/--base."""
    extra = {}
    if tasks:
        from .tasks import parse_tasks

        extra["tasks"] = parse_tasks(tasks)
    if config:
        rc = load_config(config, overrides)
        ecfg = rc.eval.model_copy(update=extra) if extra else rc.eval
        run_dir = Path(rc.output_dir)
        if model:
            target = Target("model", model, adapter or "")
        elif (run_dir / "adapter").is_dir():
            target = Target("model", rc.model.path, adapter or str(run_dir / "adapter"))
        elif (run_dir / "model").is_dir():
            target = Target("model", str(run_dir / "model"), adapter or "")
        else:
            raise UserError(f"{config}: the run directory {run_dir} has no adapter/ or model/ yet; train first or pass --model")
        if not ecfg.perplexity and rc.data.eval:
            ecfg = ecfg.model_copy(update={"perplexity": list(rc.data.eval)})
        base_path = rc.model.path if base == "auto" else base
        plan = Plan(target, None, ecfg, Path(out) if out else run_dir / "eval", run_dir, rc.model.dtype, rc.data.chat_template)
    else:
        if not model:
            raise UserError("give a run CONFIG or --model PATH (with --adapter PATH for an adapter)")
        raw = merge_dicts({}, parse_overrides(overrides or []))
        unknown = [k for k in raw if k != "eval"]
        if unknown:
            raise UserError(f"without a run config only eval.* overrides apply; got {unknown}")
        ecfg = validate_config(merge_dicts(raw.get("eval", {}), extra), EvalConfig, source="eval overrides")
        if not out:
            raise UserError("--out DIR is required with --model (with a run CONFIG it defaults to RUN_DIR/eval)")
        if base == "auto":
            raise UserError("--base needs a PATH when there is no run config (the config's model.path is the default)")
        base_path = base
        plan = Plan(Target("model", model, adapter or ""), None, ecfg, Path(out))
    if base_path:
        plan.base = Target("base", base_path)
    return plan


def _load(target: Target, dtype: str):
    from ..models.loading import load_model, load_tokenizer

    if target.adapter and (Path(target.adapter) / "tokenizer_config.json").is_file():
        # The adapter carries the tokenizer and chat template it was trained with (PITFALLS 8).
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target.adapter, trust_remote_code=False)
    else:
        tokenizer = load_tokenizer(target.path)
    quant, double_quant = "none", True
    if target.adapter:  # a QLoRA/int8 adapter is scored on the base it was trained on, quantized the same way
        from ..adapters import SIDECAR, training_quantization, unknown_quantization

        known = training_quantization(Path(target.adapter))
        if known is None:
            raise unknown_quantization(Path(target.adapter), f"evaluate it from its run directory, or write "
                                       f'{Path(target.adapter) / SIDECAR} with {{"base_quantization": "none"}} '
                                       '(or "nf4" / "int8", as it was trained)')
        quant, double_quant = known
    model = load_model(ModelConfig(path=target.path, dtype=dtype, quantization=quant, double_quant=double_quant))
    if target.adapter:
        from ..adapters import load_adapter

        model = load_adapter(model, target.adapter).eval()  # PEFT adapters and bottleneck adapters alike
    return model, tokenizer


def _perplexity(model, tokenizer, files: list[str], plan: Plan, prefix: str) -> dict:
    import math

    from .loglik import loss_and_tokens

    out = {}
    for f in files:
        data = DataConfig(train=[f], max_length=plan.cfg.max_length, overlength="truncate", chat_template=plan.chat_template)
        total, n = loss_and_tokens(model, tokenizer, data, plan.cfg.batch_size)
        loss = total / n if n else math.nan
        out[f"{prefix}{Path(f).name}"] = {"name": f"{prefix}{Path(f).name}", "metric": "perplexity", "source": f, "n": n,
                                          "scores": {"loss": loss, "perplexity": math.exp(loss) if n else math.nan},
                                          "records": []}
    return out


def _general_files(plan: Plan, tmp: Path) -> list[str]:
    if plan.cfg.general_data:
        return list(plan.cfg.general_data)
    from ..models.corpus import builtin_corpus

    path = tmp / "general_text.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in builtin_corpus(n_docs=200, seed=1234)))
    return [str(path)]


def _options(cfg: EvalConfig) -> GenOptions:
    return GenOptions(cfg.batch_size, cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.top_p, cfg.seed,
                      cfg.num_samples, tuple(cfg.pass_k), cfg.timeout_s, cfg.memory_mb)


def _score_target(target: Target, plan: Plan, questions: list[dict], tmp: Path) -> tuple[dict, list[str]]:
    from .generation import chat_prompt, generate

    say(f"eval: {target.label} {target.path}" + (f" + adapter {target.adapter}" if target.adapter else ""))
    model, tokenizer = _load(target, plan.dtype)
    results = _perplexity(model, tokenizer, plan.cfg.perplexity, plan, "ppl:")
    if plan.base is not None and plan.cfg.general:
        results.update(_perplexity(model, tokenizer, _general_files(plan, tmp), plan, "general:"))
    for task in plan.tasks:
        results[task.name] = run_task(model, tokenizer, task, _options(plan.cfg))
    answers: list[str] = []
    if questions:
        texts = [chat_prompt(tokenizer, q["question"]) for q in questions]
        answers = generate(model, tokenizer, texts, plan.cfg.max_new_tokens or 256, batch_size=plan.cfg.batch_size)
    del model
    gc.collect()
    return results, answers


def _questions(cfg: EvalConfig) -> list[dict]:
    if cfg.judge.mode == "none":
        return []
    from ..data.readers import read_rows

    if not cfg.judge.questions:
        raise UserError("`eval.judge.questions` is empty; give a JSONL file of {question, reference?} for the judge")
    out = []
    for row in read_rows(cfg.judge.questions):
        q = next((row.data[k] for k in ("question", "prompt", "instruction") if k in row.data), None)
        if not isinstance(q, str):
            raise UserError(f"{row.where}: a judge question needs a 'question' (or 'prompt'/'instruction') string field")
        out.append({"question": q, "reference": str(row.data.get("reference", "") or "")})
    return out[: cfg.limit] if cfg.limit else out


def _judge(plan: Plan, questions, answers: dict[str, list[str]]) -> dict:
    from .judge import LocalJudge, OpenAIJudge, compare_pairwise, grade_single, load_prompt

    j = plan.cfg.judge
    if j.endpoint:
        judge = OpenAIJudge(j.endpoint, j.model or "default", j.api_key_env, max_tokens=j.max_tokens)
    else:
        model, tokenizer = _load(Target("judge", j.local), plan.dtype)
        judge = LocalJudge(model, tokenizer, j.max_tokens, name=j.local)
    qs = [q["question"] for q in questions]
    if j.mode == "single":
        template = load_prompt("single", j.prompts or None)
        refs = [q["reference"] for q in questions]
        out = {side: grade_single(judge, qs, a, template, refs) for side, a in answers.items()}
    else:
        template = load_prompt("pairwise", j.prompts or None)
        out = {"pairwise": compare_pairwise(judge, qs, answers["model"], answers["base"], template)}
    return {"judge": judge.name, "mode": j.mode, **out}


def _check_judge(plan: Plan) -> None:
    j = plan.cfg.judge
    if j.mode == "none":
        return
    if bool(j.endpoint) == bool(j.local):
        raise UserError("the judge needs exactly one of `eval.judge.endpoint` (OpenAI-compatible URL) or `eval.judge.local` (model dir)")
    if j.mode == "pairwise" and plan.base is None:
        raise UserError("`eval.judge.mode: pairwise` compares the model with its base; pass --base")
    from .judge import load_prompt

    load_prompt(j.mode, j.prompts or None)


def evaluate(config: str | Path | None = None, overrides: list[str] | None = None, *, model: str | None = None,
             adapter: str | None = None, base: str | None = None, tasks: str | list[str] | None = None,
             out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Run the evaluation; returns what results.json holds."""
    plan = _plan(config, overrides, model, adapter, base, tasks, out)
    plan.tasks = [load_task(n, f, plan.cfg.limit, plan.cfg.few_shot) for n, f in plan.cfg.tasks.items()]
    _check_judge(plan)
    if not (plan.tasks or plan.cfg.perplexity or plan.cfg.judge.mode != "none" or plan.cfg.harness):
        raise UserError("nothing to evaluate: give --tasks NAME=FILE, --perplexity FILE, a judge, or --harness TASKS")
    questions = _questions(plan.cfg)
    inputs = [plan.model.path, plan.model.adapter, plan.base.path if plan.base else None,
              *plan.cfg.tasks.values(), *plan.cfg.perplexity]
    with atomic_dir(plan.out, "eval", overwrite=overwrite, inputs=inputs) as tmp:
        results = _run(plan, questions, tmp)
        from .report import write_outputs

        write_outputs(tmp, results)
    say(f"eval: report {plan.out / 'report.md'}")
    return results


def _run(plan: Plan, questions: list[dict], tmp: Path) -> dict:
    from .signals import training_signals

    sides, answers = {}, {}
    for target in [plan.model] + ([plan.base] if plan.base else []):
        sides[target.label], answers[target.label] = _score_target(target, plan, questions, tmp)
    results: dict = {"model": vars(plan.model), "base": vars(plan.base) if plan.base else None,
                     "config": plan.cfg.model_dump(mode="json"), "results": sides}
    if plan.cfg.judge.mode != "none":
        results["judge"] = _judge(plan, questions, answers)
    if plan.cfg.harness:
        from .harness import run_harness

        results["harness"] = {}
        for t in [plan.model] + ([plan.base] if plan.base else []):
            say(f"eval: lm-evaluation-harness {plan.cfg.harness} on the {t.label}")
            results["harness"][t.label] = run_harness(plan.cfg.harness, t.path, t.adapter or None, plan.cfg.harness_include or None,
                                                      plan.cfg.limit, plan.cfg.batch_size)
    if plan.base:
        results["comparison"] = compare(side_scores(results, "model"), side_scores(results, "base"), plan.cfg.regression_threshold)
    if plan.run_dir is not None:
        results["training"] = training_signals(plan.run_dir)
    return results
