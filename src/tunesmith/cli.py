"""`tunesmith <stage> ...`: one subcommand per stage, each a thin shell over the Python function of
the same name and arguments (`tunesmith.api`). A `UserError` prints as one message and exits 2;
anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 data.max_length=512")


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

    p = sub.add_parser("inspect-data", help="render a config's data: token-length statistics and label masks, without training")
    _add_run_args(p)
    p.add_argument("--show", type=int, default=2, help="examples to print with their label mask")

    p = sub.add_parser("train", help="train (sft, pretrain) with full fine-tuning, LoRA or QLoRA")
    _add_run_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")

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

    p = sub.add_parser("quickstart", help="end to end on the CPU in minutes: tiny model, pretrain, LoRA fine-tune, before/after")
    p.add_argument("--out", default="runs/quickstart", help="directory for everything the quickstart makes")
    p.add_argument("--overwrite", action="store_true")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    from . import api

    try:
        if args.command == "init-model":
            path = api.init_model(args.out, size=args.size, corpus=args.corpus, vocab=args.vocab, seed=args.seed, overwrite=args.overwrite)
            print(f"created {path}")
        elif args.command == "inspect-data":
            print(api.inspect_data(args.config, args.overrides, show=args.show))
        elif args.command == "train":
            api.train(args.config, args.overrides, overwrite=args.overwrite, resume=args.resume)
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
        elif args.command == "quickstart":
            api.quickstart(args.out, overwrite=args.overwrite)
    except UserError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
