"""Evaluation: perplexity, benchmark tasks, LLM-as-judge, before/after, training signals, reports.

    generation.py  batched chat-template generation (left padding, greedy or seeded sampling, stops)
    loglik.py      perplexity through the training pipeline; log-likelihood of choices
    tasks.py       built-in benchmark readers and the declarative YAML task format
    metrics.py     answer extraction, exact match, ROUGE-L, JSON/schema, pass@k, choice accuracy
    sandbox.py     generated code run with resource limits, a timeout and no network
    runner.py      one task on one model -> scores + per-example records
    judge.py       single-answer and position-swapped pairwise judging (OpenAI-compatible or local)
    compare.py     before/after deltas and regression flags
    signals.py     train vs eval loss divergence and the best checkpoint of a run
    harness.py     lm-evaluation-harness, when installed
    report.py      results.json, samples, judge.jsonl, scores.png, report.md
    run.py         `tunesmith eval`
"""
