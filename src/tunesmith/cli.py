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

    p = sub.add_parser("export", help="write a merged model as GGUF (F16 ... Q4_K_M) with its tokenizer and chat template, verified in llama.cpp, plus an Ollama Modelfile")
    p.add_argument("--model", required=True, help="merged transformers model directory (safetensors + tokenizer)")
    p.add_argument("--out", required=True, help="the .gguf file to write; <stem>.Modelfile, <stem>.report.md and <stem>.verify.json go beside it")
    p.add_argument("--format", default="gguf", choices=["gguf"], help="output format")
    p.add_argument("--quant", default="Q4_K_M", help="F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_K_M | Q5_K_M | Q6_K | Q3_K_M | Q2_K | ...")
    p.add_argument("--eval-file", default=None, help="held-out UTF-8 text for the perplexity check (default: built-in text)")
    p.add_argument("--max-ppl-increase", type=float, default=None, help="allowed relative perplexity increase, e.g. 0.1 (default: per type)")
    p.add_argument("--no-verify", action="store_true", help="skip the llama.cpp verification (not recommended)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")

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
        elif args.command == "export":
            result = api.export(args.model, args.out, format=args.format, quant=args.quant, eval_file=args.eval_file,
                                max_ppl_increase=args.max_ppl_increase, verify=not args.no_verify, overwrite=args.overwrite)
            print(result.summary())
        elif args.command == "quickstart":
            api.quickstart(args.out, overwrite=args.overwrite)
    except UserError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
