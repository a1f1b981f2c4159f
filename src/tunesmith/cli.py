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

    p = sub.add_parser("train", help="train (sft, pretrain, reward, dpo, kto) with full fine-tuning, LoRA or QLoRA")
    _add_run_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")

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

    p = sub.add_parser("score", help="score prompt/response pairs (or chosen/rejected pairs) with a trained reward model")
    p.add_argument("model", help="a reward run directory, or its adapter/ or model/")
    p.add_argument("data", help="JSONL/JSON/CSV rows {prompt, response} or {prompt, chosen, rejected}")
    p.add_argument("--out", default=None, help="write one JSON line per row here")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--batch-size", type=int, default=8)

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
        elif args.command == "prepare":
            m = api.prepare(args.config, args.overrides, input=args.input, format=args.format, out=args.out, benchmarks=args.benchmark,
                            tokenizer=args.tokenizer, jsonl=args.jsonl, overwrite=args.overwrite)
            print(f"prepared {m['splits']['train']} train / {m['splits']['eval']} eval rows into {m['output_dir']}; see {m['output_dir']}/prepare_report.md")
        elif args.command == "score":
            result = api.score(args.model, args.data, out=args.out, overwrite=args.overwrite, batch_size=args.batch_size)
            acc = f"; pairwise accuracy {result['accuracy']:.3f}" if "accuracy" in result else ""
            print(f"scored {result['rows']} rows{acc}" + (f"; scores in {args.out}" if args.out else ""))
        elif args.command == "quickstart":
            api.quickstart(args.out, overwrite=args.overwrite)
    except UserError as e:
        print(f"tunesmith {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
