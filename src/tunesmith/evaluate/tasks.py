"""Benchmark tasks: built-in readers for the common file formats, and a small declarative YAML format.

`--tasks NAME=FILE`: when FILE is YAML it declares the task (see `TaskSpec`); otherwise NAME picks
the built-in reader by prefix (`gsm8k`, `gsm8k_main` -> gsm8k):

    gsm8k       JSONL {question, answer}, answer ends with `#### <number>`   generation, exact match
    humaneval   JSONL {task_id, prompt, test, entry_point}                    code generation, pass@k
    mmlu        CSV question,A,B,C,D,answer (with or without a header)        log-likelihood choice
    arc         JSONL {question: {stem, choices: [{text, label}]}, answerKey} log-likelihood choice
                (or the HF layout {question, choices: {text, label}, answerKey})
    hellaswag   JSONL {ctx, endings, label}                                   log-likelihood choice
    mc          JSONL {question, choices: [...], answer: index | label}       log-likelihood choice

Prompts follow lm-evaluation-harness's defaults for these data sets, so numbers are comparable.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import Section, read_yaml, validate_config
from ..data.readers import read_rows
from ..errors import DataError, UserError

Kind = Literal["generate", "multiple_choice"]
Metric = Literal["exact_match", "rouge_l", "json", "pass_at_k", "acc"]


@dataclass
class Example:
    id: str
    prompt: str  # generation: the user message (or raw text); multiple choice: the context
    target: str = ""  # the reference (exact match, ROUGE-L) or the few-shot answer text
    choices: list[str] = field(default_factory=list)
    gold: int = -1
    shot_answer: str = ""  # how this example's answer reads when it serves as a few-shot example
    code_prompt: str = ""  # HumanEval: the function header + docstring the completion continues
    tests: str = ""  # HumanEval: test code followed by the check call
    schema: dict | None = None


@dataclass
class Task:
    name: str
    kind: Kind
    metric: Metric
    examples: list[Example]
    shots: list[Example] = field(default_factory=list)
    extract: str = "none"
    stop: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    chat: bool | None = None  # None: use the chat template when the tokenizer has one
    source: str = ""


class TaskSpec(Section):
    """A task in YAML. Field values are Python format strings over the row's fields ({question})."""

    name: str = Field("", description="Task name in the report (default: the NAME of NAME=FILE).")
    data: str = Field(description="Data file (JSONL/JSON/CSV/Parquet), relative to the YAML file.")
    type: Kind = Field(description="generate: the model writes an answer; multiple_choice: pick by log-likelihood.")
    metric: Metric = Field(description="exact_match | rouge_l | json | pass_at_k (generate); acc (multiple_choice).")
    prompt: str = Field(description="Prompt template, e.g. 'Question: {question}\\nAnswer:'.")
    target: str = Field("", description="Reference template, e.g. '{answer}' (exact_match, rouge_l, few-shot answers).")
    choices: str = Field("choices", description="multiple_choice: the field holding the list of choices.")
    gold: str = Field("answer", description="multiple_choice: the field with the correct choice (index or label).")
    choice_prefix: str = Field(" ", description="multiple_choice: text before each choice (lm-eval uses a space).")
    schema_field: str = Field("", description="json: the field with a JSON Schema to match (optional).")
    few_shot: int = Field(0, ge=0, description="Solved examples put before each prompt (taken from few_shot_data, else the first rows, which are then not scored).")
    few_shot_data: str = ""
    extract: str = Field("none", description="exact_match: gsm8k | last_number | regex:PATTERN | none.")
    stop: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(256, gt=0)
    chat: bool | None = Field(None, description="Use the chat template (default: when the tokenizer has one).")


BUILTINS = ("gsm8k", "humaneval", "mmlu", "arc", "hellaswag", "mc")


def _rows(path: Path) -> list[tuple[dict, str]]:
    return [(r.data, r.where) for r in read_rows(path)]


def _need(data: dict, keys: tuple[str, ...], where: str, fmt: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing} for the {fmt} format; expected {', '.join(keys)}")


def _gsm8k(path: Path) -> Task:
    examples = []
    for data, where in _rows(path):
        _need(data, ("question", "answer"), where, "gsm8k")
        answer = str(data["answer"])
        if "####" not in answer:
            raise DataError(f"{where}: the gsm8k answer has no '#### <number>' final line")
        examples.append(Example(where, f"Question: {data['question']}\nAnswer:", answer.split("####")[-1].strip(),
                                shot_answer=" " + answer))
    return Task("gsm8k", "generate", "exact_match", examples, extract="gsm8k", max_new_tokens=256,
                stop=["Question:", "\n\n\n"])


def _humaneval(path: Path) -> Task:
    examples = []
    for data, where in _rows(path):
        _need(data, ("task_id", "prompt", "test", "entry_point"), where, "humaneval")
        tests = f"{data['test']}\n\ncheck({data['entry_point']})\n"
        user = ("Complete the following Python function. Reply with the complete function in a ```python code block.\n\n"
                f"```python\n{data['prompt']}```")
        examples.append(Example(str(data["task_id"]), user, code_prompt=data["prompt"], tests=tests,
                                target=str(data["entry_point"])))
    # Codex's stop sequences, for raw (non-chat) completion of the function body.
    return Task("humaneval", "generate", "pass_at_k", examples, max_new_tokens=384,
                stop=["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"])


def _mc_prompt(question: str, choices: list[str]) -> str:
    letters = "ABCDEFGHIJ"
    return question.strip() + "\n" + "".join(f"{letters[i]}. {c}\n" for i, c in enumerate(choices)) + "Answer:"


def _mmlu(path: Path) -> Task:
    examples = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None
    start = 1 if rows and rows[0][0].strip().lower() == "question" else 0
    for i, r in enumerate(rows[start:], start=start + 1):
        where = f"{path}:{i}"
        if len(r) < 4:
            raise DataError(f"{where}: expected question, choices..., answer (at least 4 fields), got {len(r)}")
        question, choices, answer = r[0], r[1:-1], r[-1].strip().upper()
        letters = "ABCDEFGHIJ"[: len(choices)]
        if answer not in letters:
            raise DataError(f"{where}: answer {answer!r} is not one of {', '.join(letters)}")
        examples.append(Example(where, _mc_prompt(question, choices), choices=[f" {x}" for x in letters],
                                gold=letters.index(answer), shot_answer=f" {answer}"))
    return Task("mmlu", "multiple_choice", "acc", examples)


def _gold_index(value: Any, labels: list[str], where: str) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit() and value.strip() not in labels):
        idx = int(value)
    elif str(value).strip() in labels:
        idx = labels.index(str(value).strip())
    else:
        raise DataError(f"{where}: the answer {value!r} is neither a choice index nor one of the labels {labels}")
    if not 0 <= idx < len(labels):
        raise DataError(f"{where}: answer index {idx} is out of range for {len(labels)} choices")
    return idx


def _choice_example(where: str, context: str, choices: list[str], gold: Any, labels: list[str] | None = None) -> Example:
    labels = labels or [str(i) for i in range(len(choices))]
    if len(choices) < 2:
        raise DataError(f"{where}: a multiple-choice row needs at least 2 choices, got {len(choices)}")
    idx = _gold_index(gold, labels, where)
    return Example(where, context, choices=[" " + str(c) for c in choices], gold=idx, shot_answer=" " + str(choices[idx]))


def _arc(path: Path) -> Task:
    examples = []
    for data, where in _rows(path):
        q = data.get("question")
        if isinstance(q, dict):  # original ARC JSONL
            stem, ch = q.get("stem", ""), q.get("choices", [])
            texts, labels = [c["text"] for c in ch], [c["label"] for c in ch]
        else:  # HF layout
            _need(data, ("question", "choices", "answerKey"), where, "arc")
            stem, texts, labels = q, data["choices"]["text"], data["choices"]["label"]
        examples.append(_choice_example(where, f"Question: {stem}\nAnswer:", texts, data.get("answerKey"), labels))
    return Task("arc", "multiple_choice", "acc", examples)


def _hellaswag(path: Path) -> Task:
    examples = []
    for data, where in _rows(path):
        _need(data, ("ctx", "endings", "label"), where, "hellaswag")
        examples.append(_choice_example(where, str(data["ctx"]), list(data["endings"]), data["label"]))
    return Task("hellaswag", "multiple_choice", "acc", examples)


def _mc(path: Path) -> Task:
    examples = []
    for data, where in _rows(path):
        _need(data, ("question", "choices", "answer"), where, "mc")
        examples.append(_choice_example(where, f"Question: {data['question']}\nAnswer:", list(data["choices"]), data["answer"]))
    return Task("mc", "multiple_choice", "acc", examples)


_READERS = {"gsm8k": _gsm8k, "humaneval": _humaneval, "mmlu": _mmlu, "arc": _arc, "hellaswag": _hellaswag, "mc": _mc}


def _fill(template: str, data: dict, where: str, key: str) -> str:
    try:
        return template.format(**data)
    except (KeyError, IndexError) as e:
        raise DataError(f"{where}: the task's `{key}` template uses {e} but the row has only {sorted(data)}") from None


def _spec_examples(spec: TaskSpec, path: Path) -> list[Example]:
    out = []
    for data, where in _rows(path):
        prompt = _fill(spec.prompt, data, where, "prompt")
        target = _fill(spec.target, data, where, "target") if spec.target else ""
        if spec.type == "multiple_choice":
            _need(data, (spec.choices, spec.gold), where, "task's")
            ex = _choice_example(where, prompt, list(data[spec.choices]), data[spec.gold])
            ex.choices = [spec.choice_prefix + c[1:] for c in ex.choices]
            out.append(ex)
            continue
        schema = data.get(spec.schema_field) if spec.schema_field else None
        if isinstance(schema, str):
            schema = json.loads(schema)
        out.append(Example(where, prompt, target, shot_answer=" " + target, schema=schema))
    return out


def load_spec(path: Path, name: str) -> Task:
    spec: TaskSpec = validate_config(read_yaml(path), TaskSpec, source=str(path))
    kinds = {"multiple_choice": ("acc",), "generate": ("exact_match", "rouge_l", "json", "pass_at_k")}
    if spec.metric not in kinds[spec.type]:
        raise UserError(f"{path}: `metric: {spec.metric}` does not go with `type: {spec.type}`; use one of {kinds[spec.type]}")
    if spec.metric == "pass_at_k":
        raise UserError(f"{path}: pass_at_k tasks need test code per problem; use the built-in humaneval reader (NAME=humaneval)")
    data = (path.parent / spec.data) if not Path(spec.data).is_absolute() else Path(spec.data)
    examples = _spec_examples(spec, data)
    shots: list[Example] = []
    if spec.few_shot:
        if spec.few_shot_data:
            shots = _spec_examples(spec, path.parent / spec.few_shot_data)[: spec.few_shot]
        else:
            shots, examples = examples[: spec.few_shot], examples[spec.few_shot :]
    return Task(spec.name or name, spec.type, spec.metric, examples, shots, spec.extract, spec.stop,
                spec.max_new_tokens, spec.chat, str(path))


def load_task(name: str, file: str | Path, limit: int = 0, few_shot: int = 0) -> Task:
    """The task NAME=FILE, its first `limit` examples when limit > 0. A built-in task with
    few_shot > 0 takes its first `few_shot` rows as solved examples and does not score them."""
    path = Path(file)
    if not path.exists():
        raise UserError(f"--tasks {name}={file}: no such file")
    if path.suffix in (".yaml", ".yml"):
        task = load_spec(path, name)
    else:
        kind = next((b for b in sorted(BUILTINS, key=len, reverse=True) if name.lower().startswith(b)), None)
        if kind is None:
            raise UserError(f"--tasks {name}={file}: no built-in reader for '{name}'; start the name with one of "
                            f"{', '.join(BUILTINS)}, or give a task YAML file (see `tunesmith eval --help`)")
        task = _READERS[kind](path)
        task.name, task.source = name, str(path)
        if few_shot:
            if task.metric == "pass_at_k":
                raise UserError(f"--tasks {name}: few-shot examples are not supported for code tasks (pass@k); set eval.few_shot=0")
            task.shots, task.examples = task.examples[:few_shot], task.examples[few_shot:]
    if not task.examples:
        raise DataError(f"{file}: task {name} has no examples")
    if limit > 0:
        task.examples = task.examples[:limit]
    return task


def parse_tasks(spec: str | list[str] | dict[str, str] | None) -> dict[str, str]:
    """'a=x.jsonl,b=y.yaml' (or a list of such, or a mapping) -> {name: file}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    items = [p for s in ([spec] if isinstance(spec, str) else spec) for p in s.split(",") if p.strip()]
    out: dict[str, str] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise UserError(f"--tasks: `{item}` is not NAME=FILE (e.g. gsm8k=test.jsonl)")
        if name.strip() in out:
            raise UserError(f"--tasks: the name `{name.strip()}` is given twice; names must differ")
        out[name.strip()] = file.strip()
    return out
