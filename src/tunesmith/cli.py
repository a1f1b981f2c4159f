"""`tunesmith <stage> ...`: one subcommand per stage, each a thin shell over the Python function of
the same name and arguments (`tunesmith.api`). A `UserError` prints as one message and exits 2;
anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 data.max_length=512")


def _positive_count(text: str) -> int:
    # eval.limit 0 means "all" in the config; as a flag, `--limit 0` reads as "none" and would
    # silently score everything, so the flag takes only N >= 1.
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} examples would score nothing; give N >= 1, or omit --limit to score every example")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune LLMs: data -> train -> evaluate -> merge -> export -> serve.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__import__('tunesmith').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)

    p = sub.add_parser("init-model", help="create a small Llama-architecture model with a BPE tokenizer trained on your text")
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--size", default="tiny", help="tiny | small")
    p.add_argument("--corpus", nargs="*", default=None, help="text files to train the tokenizer on (default: built-in text)")
    p.add_argument("--vocab", type=int, default=2048, help="vocabulary size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("convert", help="GGUF in: write a .gguf file (or smollm2-135m-instruct) as a transformers model directory")
    p.add_argument("src", help="a .gguf file (Llama, Mistral, Qwen2) or a packaged model's name: smollm2-135m-instruct")
    p.add_argument("--out", required=True, help="directory to create (safetensors, tokenizer, chat template, generation config)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("inspect-data", help="render a config's data: token-length statistics and label masks, without training")
    _add_run_args(p)
    p.add_argument("--show", type=int, default=2, help="examples to print with their label mask")

    p = sub.add_parser("train", help="train (sft, pretrain, reward, dpo, kto) with full fine-tuning, LoRA or QLoRA")
    _add_run_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")

    p = sub.add_parser("estimate", help="memory and time of a training run before it starts (breakdown, fits, largest micro-batch)")
    p.add_argument("config", nargs="?", default=None, help="run config (YAML), as for train (optional with --model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.micro_batch_size=8 data.max_length=4096")
    p.add_argument("--model", help="model directory, config.json, .gguf or cached hub id (sets model.path)")
    p.add_argument("--method", choices=["full", "lora", "qlora"], help="full fine-tuning, LoRA, or LoRA on an NF4 base")
    p.add_argument("--batch", type=int, help="micro-batch size (train.micro_batch_size)")
    p.add_argument("--seq-len", type=int, help="tokens per row (data.max_length)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="cpu", help="cpu (this machine) or a GPU class: A100-40GB, A100-80GB, H100-80GB, H200-141GB, RTX4090-24GB, L40S-48GB, ...")
    p.add_argument("--gpus", type=int, default=1, help="processes (one per GPU)")
    p.add_argument("--sharding", choices=["ddp", "fsdp", "zero1", "zero2", "zero3"], default=None, help="default: fsdp when train.fsdp, else ddp")
    p.add_argument("--offload", choices=["none", "optimizer", "all"], default="none", help="CPU offload (DeepSpeed/FSDP style)")
    p.add_argument("--generation-tokens", type=int, default=0, help="online RL (grpo/rloo/ppo): the expected completion length "
                   "(default rl.max_new_tokens); other methods: tokens generated per row (adds the KV cache)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="online RL: the prompt length in tokens (default: the "
                   "data's prompts rendered with the chat template; rl.max_prompt_length when they cannot be read)")
    p.add_argument("--rows", type=int, default=0, help="training rows (of max_length) in an epoch, for the epoch time")
    p.add_argument("--utilisation", type=float, default=None, help="fraction of peak FLOP/s assumed for time (default: CPU 0.5 calibrated on a measured run, GPU 0.40)")
    p.add_argument("--json", action="store_true", help="print JSON: peak_bytes, breakdown, fits, step_seconds, ...")

    p = sub.add_parser("score", help="score prompt/response pairs (or chosen/rejected pairs) with a trained reward model")
    p.add_argument("model", help="a reward run directory, or its adapter/ or model/")
    p.add_argument("data", help="JSONL/JSON/CSV rows {prompt, response} or {prompt, chosen, rejected}")
    p.add_argument("--out", default=None, help="write one JSON line per row here")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--batch-size", type=int, default=8)
    p = sub.add_parser("prepare", help="clean a data set: filters, exact/near dedup, PII, contamination, token statistics, split and mix")
    p.add_argument("config", nargs="?", default=None, help="run config (YAML) with data: and prepare: sections (optional)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prepare.dedup.threshold=0.7")
    p.add_argument("--input", nargs="+", default=None, help="data files (sets data.train)")
    p.add_argument("--format", default=None, help="auto | alpaca | sharegpt | messages | text | preference | kto")
    p.add_argument("--out", default=None, help="output directory (sets output_dir)")
    p.add_argument("--benchmark", nargs="+", default=None, help="benchmark files to check contamination against")
    p.add_argument("--tokenizer", default=None, help="tokenizer for token counts (default: model.path)")
    p.add_argument("--jsonl", action="store_true", help="also write train.jsonl / eval.jsonl")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p = sub.add_parser("eval", help="evaluate a model/adapter: perplexity, benchmark tasks, LLM-as-judge, before/after vs its base")
    p.add_argument("config", nargs="?", default=None, help="run config (YAML): scores its adapter/ or model/, writes RUN_DIR/eval")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.limit=50 eval.num_samples=5 eval.pass_k=[1,5]")
    p.add_argument("--model", help="model directory (or the base of --adapter) when there is no run config")
    p.add_argument("--adapter", help="PEFT adapter directory applied to --model")
    p.add_argument("--base", nargs="?", const="auto", default=None, help="also score this base model and report deltas (alone: the config's model.path)")
    p.add_argument("--tasks", help="NAME=FILE[,NAME=FILE...]: gsm8k, humaneval, mmlu, arc, hellaswag, mc readers by name prefix, or a task YAML")
    p.add_argument("--perplexity", nargs="+", metavar="FILE", help="data files to report loss/perplexity on")
    p.add_argument("--limit", type=_positive_count, help="score only the first N (>= 1) examples of each task; omit it to score all")
    p.add_argument("--few-shot", type=int, help="built-in tasks: the first N rows become solved examples before each prompt")
    p.add_argument("--judge", choices=["single", "pairwise"], help="LLM-as-judge mode (with --judge-questions)")
    p.add_argument("--judge-questions", help="JSONL of {question, reference?} for the judge")
    p.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", help="model name sent to the judge endpoint")
    p.add_argument("--judge-local", help="local model directory to judge with")
    p.add_argument("--harness", help="lm-evaluation-harness tasks, comma-separated (needs tunesmith[harness])")
    p.add_argument("--harness-include", help="directory of your own lm-eval task YAMLs (e.g. pointing at local data)")
    p.add_argument("--out", help="the eval directory to write (default RUN_DIR/eval)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing eval directory")
    p = sub.add_parser("merge", help="merge adapters into their base (--base --adapter) or whole models (--config merge.yaml)")
    p.add_argument("--out", required=True, help="directory for the merged transformers model")
    p.add_argument("--base", help="base model directory the adapter was trained on")
    p.add_argument("--adapter", action="append", help="PEFT adapter directory (repeat for a weighted merge of several)")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per --adapter (LoRA only)")
    p.add_argument("--base-quantization", default="auto", help="auto (from the run's config.yaml) | none | nf4 | int8")
    p.add_argument("--dtype", default="auto", help="saved dtype: auto (the base's) | fp32 | bf16 | fp16")
    p.add_argument("--config", help="merge.yaml for model merging (linear, slerp, task_arithmetic, ties, dare_*)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of merge.yaml, e.g. parameters.density=0.5")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("quantize", help="INT8/NF4 (bitsandbytes), GPTQ or AWQ checkpoint, with perplexity vs the original")
    p.add_argument("--model", required=True, help="model directory (e.g. the output of `tunesmith merge`)")
    p.add_argument("--out", required=True, help="directory for the quantized model")
    p.add_argument("--method", required=True, help="int8 | nf4 | gptq | awq")
    p.add_argument("--bits", type=int, default=4, help="gptq/awq: 4 or 8")
    p.add_argument("--group-size", type=int, default=128, help="gptq/awq: columns per scale (-1: one per row)")
    p.add_argument("--act-order", action="store_true", help="gptq: quantize columns by decreasing Hessian diagonal")
    p.add_argument("--calibration", help="text file (.txt lines, or .jsonl with a `text` field) for gptq/awq; default: built-in text")
    p.add_argument("--eval", dest="eval_file", help="held-out text for perplexity; default: built-in text disjoint from calibration")
    p.add_argument("--samples", type=int, default=128, help="calibration sequences")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration/evaluation sequence")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p = sub.add_parser("export", help="write a merged model as GGUF (F16 ... Q4_K_M) with its tokenizer and chat template, verified in llama.cpp, plus an Ollama Modelfile")
    p.add_argument("--model", required=True, help="merged transformers model directory (safetensors + tokenizer)")
    p.add_argument("--out", required=True, help="the .gguf file to write; <stem>.Modelfile, <stem>.report.md and <stem>.verify.json go beside it")
    p.add_argument("--format", default="gguf", choices=["gguf"], help="output format")
    p.add_argument("--quant", default="Q4_K_M", help="F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_K_M | Q5_K_M | Q6_K | Q3_K_M | Q2_K | ...")
    p.add_argument("--eval-file", default=None, help="held-out UTF-8 text for the perplexity check (default: built-in text)")
    p.add_argument("--max-ppl-increase", type=float, default=None, help="allowed relative perplexity increase, e.g. 0.1 (default: per type)")
    p.add_argument("--no-verify", action="store_true", help="skip the llama.cpp verification (not recommended)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")

    p = sub.add_parser("serve", help="OpenAI-compatible server: many LoRA adapters batched together, runtime load/unload")
    p.add_argument("--model", required=True, help="model directory, run directory or config, adapter directory, or .gguf file")
    p.add_argument("--adapter", action="append", help="NAME=DIR: a LoRA adapter (or run directory) clients select with model=NAME (repeat)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs --api-key")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("TUNESMITH_API_KEY"), help="required as `Authorization: Bearer KEY` (default $TUNESMITH_API_KEY)")
    p.add_argument("--engine", default="builtin", choices=["builtin", "vllm"], help="vllm: hand the model and adapters to `vllm serve` (GPU)")
    p.add_argument("--max-adapters", type=int, default=8, help="adapters kept in memory (least recently used evicted, reloaded on demand)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="sequences waiting to join; beyond it requests get 503")
    p.add_argument("--max-tokens", type=int, default=1024, help="the most tokens one request may generate")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--allowed-adapter-dir", action="append", help="directories /v1/load_lora_adapter may read from (default: the current directory)")
    p.add_argument("--served-model-name", help="the base model's name in /v1/models (default: its directory name)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="weights in memory (auto: fp32 on the CPU)")

    p = sub.add_parser("ui", help="local web dashboard: runs table, live curves, compare, start a run (read-only unless --allow-train)")
    p.add_argument("--runs", default="runs", help="directory that holds the run directories (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs --token")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--token", default=os.environ.get("TUNESMITH_UI_TOKEN"), help="required by every request when set "
                   "(default $TUNESMITH_UI_TOKEN); the printed URL carries it")
    p.add_argument("--allow-train", action="store_true", help="allow starting, stopping and resuming runs from the page")
    p.add_argument("--serve-url", default="http://127.0.0.1:8000", help="the playground's `tunesmith serve` (default: its "
                   "default address, http://127.0.0.1:8000)")
    p.add_argument("--serve-key", default=os.environ.get("TUNESMITH_API_KEY", ""), help="that server's --api-key "
                   "(default $TUNESMITH_API_KEY, as serve reads it); sent only to the server, never to the page")

    p = sub.add_parser("quickstart", help="end to end on the CPU in minutes: SmolLM2-135M-Instruct from GGUF, LoRA, DPO, merge, "
                       "GGUF Q4_K_M, one before/after table")
    p.add_argument("--out", default="runs/quickstart", help="directory for everything the quickstart makes")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tiny", action="store_true", help="the fast variant on a tiny model tunesmith builds itself "
                   "(pre-training, LoRA, DPO; no download, no llama.cpp)")
    return parser


def _quiet_libraries() -> None:
    """Our own progress bar and messages are the ones a person reads; silence the libraries' chatter."""
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient checkpointing.*")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _eval_overrides(args: argparse.Namespace) -> list[str]:
    """`tunesmith eval` flags that are eval.* config keys, as dotted overrides (JSON is valid YAML)."""
    import json

    pairs = {"eval.perplexity": args.perplexity, "eval.limit": args.limit, "eval.few_shot": args.few_shot, "eval.judge.mode": args.judge,
             "eval.judge.questions": args.judge_questions, "eval.judge.endpoint": args.judge_endpoint,
             "eval.judge.model": args.judge_model, "eval.judge.local": args.judge_local,
             "eval.harness": args.harness.split(",") if args.harness else None,
             "eval.harness_include": args.harness_include}
    return [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]


def _fast_allocator(command: str, from_command_line: bool) -> None:
    """`tunesmith train` from a command line re-executes itself once under jemalloc/tcmalloc/mimalloc
    (train/allocator.py); a call of main() with an argv list (tests, other Python) never does."""
    from .train import allocator

    allocator.at_start(command == "train" and from_command_line and allocator.own_command_line())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _fast_allocator(args.command, argv is None)
    except UserError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    if args.command != "ui":  # the dashboard loads no model (its runs are subprocesses): skip importing transformers
        _quiet_libraries()
    from . import api

    try:
        if args.command == "init-model":
            path = api.init_model(args.out, size=args.size, corpus=args.corpus, vocab=args.vocab, seed=args.seed, overwrite=args.overwrite)
            print(f"created {path}")
        elif args.command == "convert":
            import json

            path = api.convert(args.src, args.out, overwrite=args.overwrite)
            src = json.loads((path / "config.json").read_text(encoding="utf-8"))["tunesmith_gguf_source"]
            print(f"wrote {path} from {src['file']} ({src['architecture']}, {src['quant_type']})")
            print(f"note: {src['note']}")
        elif args.command == "inspect-data":
            print(api.inspect_data(args.config, args.overrides, show=args.show))
        elif args.command == "train":
            api.train(args.config, args.overrides, overwrite=args.overwrite, resume=args.resume)
        elif args.command == "estimate":
            import json

            est = api.estimate(args.config, args.overrides, model=args.model, method=args.method, micro_batch_size=args.batch,
                               seq_len=args.seq_len, gradient_checkpointing=args.gradient_checkpointing, packing=args.packing,
                               device=args.device, gpus=args.gpus, sharding=args.sharding, offload=args.offload,
                               generation_tokens=args.generation_tokens, dataset_rows=args.rows, utilisation=args.utilisation,
                               prompt_tokens=args.prompt_tokens)
            print(json.dumps(est.to_json(), indent=2) if args.json else est.render())
        elif args.command == "score":
            result = api.score(args.model, args.data, out=args.out, overwrite=args.overwrite, batch_size=args.batch_size)
            acc = f"; pairwise accuracy {result['accuracy']:.3f}" if "accuracy" in result else ""
            if (lb := result.get("length_bias")) is not None:  # the reward-hacking risk RL would exploit
                acc += (f"; scores the longer response higher in {lb['prefers_longer']:.0%} of {lb['pairs']} pairs of unequal "
                        f"length (corr(score gap, token gap) {lb['corr']:+.2f}, {100 * lb['slope']:+.3f} per 100 tokens)")
            print(f"scored {result['rows']} rows{acc}" + (f"; scores in {args.out}" if args.out else ""))
        elif args.command == "prepare":
            m = api.prepare(args.config, args.overrides, input=args.input, format=args.format, out=args.out, benchmarks=args.benchmark,
                            tokenizer=args.tokenizer, jsonl=args.jsonl, overwrite=args.overwrite)
            print(f"prepared {m['splits']['train']} train / {m['splits']['eval']} eval rows into {m['output_dir']}; see {m['output_dir']}/prepare_report.md")
        elif args.command == "merge":
            s = api.merge(args.out, base=args.base, adapter=args.adapter, weights=args.weights, config=args.config,
                          overrides=args.overrides, base_quantization=args.base_quantization, dtype=args.dtype,
                          overwrite=args.overwrite)
            print(f"wrote {s['out']} ({s['size_bytes'] / 2**20:.1f} MiB, {s['dtype']}); see report.md")
            print(f"verified: {s['verified']}")
        elif args.command == "quantize":
            s = api.quantize(args.model, args.out, args.method, bits=args.bits, group_size=args.group_size,
                             act_order=args.act_order, calibration=args.calibration, eval_file=args.eval_file,
                             samples=args.samples, seq_len=args.seq_len, overwrite=args.overwrite)
            print(f"wrote {s['out']} ({s['size_bytes'] / 2**20:.1f} MiB); see report.md")
            print(f"verified: {s['verified']}")
        elif args.command == "export":
            result = api.export(args.model, args.out, format=args.format, quant=args.quant, eval_file=args.eval_file,
                                max_ppl_increase=args.max_ppl_increase, verify=not args.no_verify, overwrite=args.overwrite)
            print(result.summary())
        elif args.command == "serve":
            return api.serve(args.model, adapters=args.adapter, engine=args.engine, host=args.host, port=args.port,
                             api_key=args.api_key, max_adapters=args.max_adapters, max_batch=args.max_batch,
                             max_queue=args.max_queue, max_tokens=args.max_tokens, max_body_bytes=args.max_body_bytes,
                             allowed_adapter_dirs=args.allowed_adapter_dir or [], served_model_name=args.served_model_name,
                             dtype=args.dtype)
        elif args.command == "ui":
            return api.ui(args.runs, host=args.host, port=args.port, token=args.token, allow_train=args.allow_train,
                          serve_url=args.serve_url, serve_key=args.serve_key)
        elif args.command == "quickstart":
            api.quickstart(args.out, overwrite=args.overwrite, tiny=args.tiny)
        elif args.command == "eval":
            config, overrides = args.config, list(args.overrides)
            if config and "=" in config and not os.path.exists(config):  # no config, only overrides
                config, overrides = None, [config] + overrides
            api.eval(config, overrides + _eval_overrides(args), model=args.model, adapter=args.adapter,
                     base=args.base, tasks=args.tasks, out=args.out, overwrite=args.overwrite)
    except UserError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
