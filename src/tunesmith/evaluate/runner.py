"""Run one task on one model: render prompts, generate or score choices, compute the task's metric.

Returns the aggregate scores and one record per example (prompt, answer, score), which the report
samples from and results.json keeps whole, so any number can be traced to the generations behind it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..console import progress_bar

from . import metrics as M
from .generation import generate
from .loglik import continuation_logprobs
from .sandbox import run_program
from .tasks import Example, Task


@dataclass
class GenOptions:
    batch_size: int = 8
    max_new_tokens: int = 0  # 0: the task's own default
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    num_samples: int = 1  # generations per problem (pass@k needs n >= k)
    pass_k: tuple[int, ...] = (1,)
    timeout_s: float = 10.0
    memory_mb: int = 1024
    progress: bool = True


def use_chat(task: Task, tokenizer) -> bool:
    return task.chat if task.chat is not None else bool(getattr(tokenizer, "chat_template", None))


def render(task: Task, ex: Example, tokenizer, chat: bool) -> str:
    """The text the model continues: chat turns (few-shot examples as earlier turns) or plain text."""
    if chat:
        messages = []
        for s in task.shots:
            messages += [{"role": "user", "content": s.prompt}, {"role": "assistant", "content": s.shot_answer.strip()}]
        messages.append({"role": "user", "content": ex.prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shots = "".join(s.prompt + s.shot_answer + "\n\n" for s in task.shots)
    body = ex.code_prompt if task.metric == "pass_at_k" else ex.prompt
    return shots + body


def _bar(total: int, desc: str, on: bool):
    return progress_bar(total=total, desc=desc, unit="ex", disable=not on, leave=False, dynamic_ncols=True)


def run_multiple_choice(model, tokenizer, task: Task, opts: GenOptions) -> dict:
    shots = "".join(s.prompt + s.shot_answer + "\n\n" for s in task.shots)
    pairs = [(shots + ex.prompt, c) for ex in task.examples for c in ex.choices]
    with _bar(len(pairs), f"{task.name} (choices)", opts.progress) as bar:
        lps = continuation_logprobs(model, tokenizer, pairs, batch_size=opts.batch_size, progress=bar)
    records, i = [], 0
    for ex in task.examples:
        mine = lps[i : i + len(ex.choices)]
        i += len(ex.choices)
        s = M.choice_accuracy(mine, ex.choices, ex.gold)
        pick = max(range(len(mine)), key=mine.__getitem__)
        records.append({"id": ex.id, "prompt": ex.prompt, "choices": ex.choices, "gold": ex.gold, "pick": pick,
                        "logprobs": [round(x, 4) for x in mine], **s})
    return {"scores": _mean(records, ("acc", "acc_norm")), "n": len(records), "records": records}


def _mean(records: list[dict], keys) -> dict[str, float]:
    return {k: sum(r[k] for r in records) / max(1, len(records)) for k in keys if records and k in records[0]}


def humaneval_program(ex: Example, completion: str, chat: bool) -> str:
    """The program to test: a fenced code block that defines the entry point is taken whole (with the
    prompt's imports); otherwise the completion continues the prompt's function header."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", completion, re.S)
    code = m.group(1) if m else completion
    if re.search(rf"^\s*def\s+{re.escape(ex.target)}\s*\(", code, re.M):
        imports = "".join(line + "\n" for line in ex.code_prompt.splitlines() if line.startswith(("import ", "from ")))
        return imports + code + "\n\n" + ex.tests
    return ex.code_prompt + code + "\n\n" + ex.tests


def _score_generation(task: Task, ex: Example, answer: str, chat: bool, opts: GenOptions) -> dict:
    if task.metric == "exact_match":
        pred = M.extract_answer(answer, task.extract)
        target = ex.target if task.extract == "none" else (M.extract_answer(ex.target, task.extract) or ex.target)
        return {"extracted": pred, "exact_match": float(M.answers_match(pred, target))}
    if task.metric == "rouge_l":
        return {"rouge_l": M.rouge_l(answer, ex.target)}
    if task.metric == "json":
        return M.json_scores(answer, ex.schema)
    outcome = run_program(humaneval_program(ex, answer, chat), opts.timeout_s, opts.memory_mb)
    return {"passed": outcome.passed, "status": outcome.status, "detail": outcome.detail}


def run_generation(model, tokenizer, task: Task, opts: GenOptions) -> dict:
    chat = use_chat(task, tokenizer)
    n = max(1, opts.num_samples)
    texts = [render(task, ex, tokenizer, chat) for ex in task.examples]
    # Codex's stop strings cut raw function bodies; in a chat answer they would cut the code block.
    stop = [] if chat and task.metric == "pass_at_k" else task.stop
    answers: list[list[str]] = [[] for _ in texts]
    with _bar(len(texts) * n, f"{task.name} (generate)", opts.progress) as bar:
        for s in range(n):
            outs = generate(model, tokenizer, texts, opts.max_new_tokens or task.max_new_tokens,
                            batch_size=opts.batch_size, do_sample=opts.do_sample or n > 1, temperature=opts.temperature,
                            top_p=opts.top_p, seed=opts.seed + s, stop=stop, progress=bar)
            for a, o in zip(answers, outs):
                a.append(o)
    records = []
    for ex, text, outs in zip(task.examples, texts, answers):
        scored = [_score_generation(task, ex, o, chat, opts) for o in outs]
        rec = {"id": ex.id, "prompt": text, "answer": outs[0], "target": ex.target, **scored[0]}
        if task.metric == "pass_at_k":
            c = sum(sc["passed"] for sc in scored)
            rec.update({"n": len(outs), "correct": c, "answers": outs,
                        **{f"pass@{k}": M.pass_at_k(len(outs), c, k) for k in opts.pass_k if k <= len(outs)}})
        records.append(rec)
    keys = {"exact_match": ("exact_match",), "rouge_l": ("rouge_l",), "json": ("json_valid", "schema_match"),
            "pass_at_k": tuple(f"pass@{k}" for k in opts.pass_k if k <= n)}[task.metric]
    return {"scores": _mean(records, keys), "n": len(records), "records": records}


def run_task(model, tokenizer, task: Task, opts: GenOptions) -> dict:
    out = (run_multiple_choice if task.kind == "multiple_choice" else run_generation)(model, tokenizer, task, opts)
    return {"name": task.name, "metric": task.metric, "source": task.source, **out}
