"""The run config: one YAML file validated by pydantic, plus dotted overrides from the command line.

`load_config("cfg.yaml", ["train.lr=1e-4"])` returns a validated `RunConfig` or raises `ConfigError`
whose message names the key, what was wrong and the fix. Validation happens before anything heavy
(no weights are loaded until the whole config is known to be good). Validators never rewrite what
the user wrote; derived values are methods.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .rl_config import RLConfig, check_rl

Dtype = Literal["auto", "fp32", "bf16", "fp16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = Field(description="Local directory or hub id (org/name) of a causal LM.")
    dtype: Dtype = Field(
        "auto",
        description="Storage dtype of the frozen weights. auto: bf16 on a GPU that supports it, else fp32. "
        "Trainable parameters are always kept in fp32 (master weights).",
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none", description="Load the base through bitsandbytes: int8 (LLM.int8) or nf4 (QLoRA)."
    )
    double_quant: bool = Field(True, description="NF4 only: quantize the absmax constants too (QLoRA).")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")


class DataConfig(_Section):
    train: list[str] = Field(default_factory=list, description="Training files: JSON, JSONL(.gz), CSV, Parquet, or a saved `datasets` directory.")
    eval: list[str] = Field(default_factory=list, description="Evaluation files; when empty, `eval_fraction` of train is held out.")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the training rows held out for eval loss when `data.eval` is empty.")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "text"] = Field(
        "auto", description="Row format; auto detects it from the first row's fields."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map the format's field names to the file's, e.g. {instruction: question, output: answer}.",
    )
    max_length: int = Field(2048, gt=8, description="Tokens per training row (packed or padded).")
    overlength: Literal["drop", "truncate", "error"] = Field(
        "drop", description="Chat/instruction examples longer than max_length: drop them (counted), cut them, or stop. Text is split into blocks instead."
    )
    packing: bool = Field(False, description="Pack several examples per row, padding-free, with attention that cannot cross examples.")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows stop the run with file:line (raise) or are skipped and counted (skip).")
    train_on_prompt: bool = Field(False, description="Also put labels on system/user turns (default: assistant turns only).")
    chat_template: str = Field(
        "auto", description="auto: the tokenizer's template, else ChatML; 'chatml'; or a Jinja template string."
    )

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class IA3Options(_Section):
    feedforward_modules: str | list[str] = Field(
        "mlp", description="Adapted modules whose *input* is scaled (the MLP's down projection in the IA3 paper): "
        "a preset (mlp, attention, all-linear) intersected with adapter.target_modules, or names."
    )


class PrefixOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Prefix length: key/value vectors prepended in every layer.")
    projection: bool = Field(False, description="Reparameterise the prefix through a 2-layer MLP (the paper's trick; "
                             "trains more parameters, saves the same prefix).")
    encoder_hidden_size: int = Field(256, gt=0, description="Hidden width of that MLP (projection: true only).")


class PromptOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Soft-prompt length (embeddings prepended to the input).")
    init_text: str = Field("", description="Initialise the soft prompt from the embeddings of this text (empty: random).")


class PTuningOptions(_Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Virtual tokens produced by the prompt encoder.")
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="Prompt encoder: MLP or bidirectional LSTM (P-tuning paper).")
    encoder_hidden_size: int = Field(128, gt=0, description="Hidden width of the prompt encoder.")


class BottleneckOptions(_Section):
    size: int = Field(64, gt=0, description="Bottleneck width: d_model -> size -> d_model.")
    after: list[Literal["attention", "mlp"]] = Field(
        default_factory=lambda: ["attention", "mlp"], min_length=1,
        description="Where the adapters go: after each layer's attention block, its MLP, or both (Houlsby: both).",
    )
    nonlinearity: Literal["relu", "gelu", "silu"] = "relu"


# Which options mean something for which `adapter.type`; validation names the key when they do not.
_ADAPTER_OPTIONS = {
    "r": ("lora", "dora"), "alpha": ("lora", "dora"), "dropout": ("lora", "dora"), "use_rslora": ("lora", "dora"),
    "init": ("lora", "dora"), "rank_pattern": ("lora", "dora"), "alpha_pattern": ("lora", "dora"),
    "target_modules": ("lora", "dora", "ia3"), "modules_to_save": ("lora", "dora", "ia3", "prefix", "prompt", "ptuning", "adapter"),
    "ia3": ("ia3",), "prefix": ("prefix",), "prompt": ("prompt",), "ptuning": ("ptuning",), "bottleneck": ("adapter",),
}


class AdapterConfig(_Section):
    type: Literal["none", "lora", "dora", "ia3", "prefix", "prompt", "ptuning", "adapter"] = Field(
        "lora", description="none = full fine-tuning; lora (QLoRA with model.quantization: nf4), dora, ia3, prefix, "
        "prompt, ptuning (PEFT); adapter = Houlsby bottleneck adapters. See docs/peft.md."
    )
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear", description="Preset ('all-linear', 'attention', 'mlp') or explicit module names (q_proj, v_proj, ...)."
    )
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained in full next to the adapter (e.g. lm_head, embed_tokens).")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="LoRA init: default (Kaiming A, zero B), gaussian (Gaussian A, zero B), pissa (principal "
        "singular vectors), olora (QR); pissa/olora rewrite the base weights and need model.quantization: none.",
    )
    rank_pattern: dict[str, int] = Field(default_factory=dict, description="Per-module rank, e.g. {'layers.0.self_attn.q_proj': 4} (regex on names).")
    alpha_pattern: dict[str, float] = Field(default_factory=dict, description="Per-module alpha, same keys as rank_pattern.")
    ia3: IA3Options = Field(default_factory=IA3Options)
    prefix: PrefixOptions = Field(default_factory=PrefixOptions)
    prompt: PromptOptions = Field(default_factory=PromptOptions)
    ptuning: PTuningOptions = Field(default_factory=PTuningOptions)
    bottleneck: BottleneckOptions = Field(default_factory=BottleneckOptions)

    @model_validator(mode="after")
    def _options_fit_type(self) -> AdapterConfig:
        if self.type == "none":
            return self
        # Compared with the defaults rather than "was it written", so a dumped config.yaml reloads.
        for key, types in _ADAPTER_OPTIONS.items():
            default = type(self).model_fields[key].get_default(call_default_factory=True)
            if self.type not in types and getattr(self, key) != default:
                raise ValueError(f"`adapter.{key}` applies to adapter.type {' / '.join(types)}, not {self.type}; remove it")
        return self

    def is_prompt_learning(self) -> bool:
        return self.type in ("prefix", "prompt", "ptuning")


class TrainConfig(_Section):
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the training data; ignored when max_steps > 0.")
    max_steps: int = Field(0, ge=0, description="Optimizer steps; 0 = as many as `epochs` takes.")
    micro_batch_size: int = Field(4, gt=0, description="Rows per forward pass per process.")
    grad_accum_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay as a fraction of lr.")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"] = "adamw"
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip the global grad norm to this; 0 disables clipping.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision (autocast). auto: bf16 on a GPU that supports it, else fp32."
    )
    gradient_checkpointing: bool = False
    fsdp: bool = Field(
        False, description="Under torchrun/accelerate with several processes: shard parameters, gradients and optimizer "
        "state with PyTorch FSDP2 (one group per decoder layer) instead of replicating them (DDP). Works on the CPU (gloo) too.")
    loss_chunk_size: int = Field(
        2048, ge=0, description="Most tokens per chunk of the fused lm_head + cross-entropy (the (B,T,V) logits never exist at once); "
        "chunks are also capped at 2^26 logits (256 MiB fp32), so large vocabularies get fewer rows; 0 = plain loss."
    )
    save_every: int = Field(500, ge=0, description="Checkpoint every N optimizer steps (0 = only the final result).")
    keep_checkpoints: int = Field(2, ge=0, description="Keep the newest N checkpoints (0 = keep all).")
    eval_every: int = Field(0, ge=0, description="Eval loss every N steps (0 = only at the end).")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evals without improvement (0 = off).")
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    log_every: int = Field(1, gt=0)
    seed: int = 42
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    progress: bool = Field(True, description="Show a progress bar on stderr.")

    @model_validator(mode="after")
    def _exclusive_warmup(self) -> TrainConfig:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("`train.warmup_steps` and `train.warmup_ratio` are exclusive; set one")
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("`train.early_stopping_patience` needs `train.eval_every` > 0 (evals to compare)")
        return self

    def warmup_for(self, total_steps: int) -> int:
        return self.warmup_steps or int(round(self.warmup_ratio * total_steps))


class PreferenceConfig(_Section):
    """`method: reward | dpo | kto` settings (the section is named `dpo`)."""
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "cpo", "orpo"] = Field(
        "sigmoid", description="method: dpo only. sigmoid = DPO; ipo; hinge (SLiC); simpo, cpo, orpo need no reference model.")
    beta: float = Field(0.1, gt=0, description="Strength of the KL constraint (DPO/IPO/hinge/KTO), SimPO/CPO reward scale, ORPO lambda.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="sigmoid only: assumed label noise (cDPO).")
    simpo_gamma: float = Field(0.5, ge=0.0, description="SimPO target reward margin (gamma).")
    cpo_alpha: float = Field(1.0, ge=0.0, description="CPO weight of the NLL term on the chosen response.")
    max_prompt_length: int = Field(512, gt=0, description="The prompt keeps its last N tokens; must be < data.max_length.")
    precompute_ref: bool = Field(
        False, description="Compute the reference log-probs once before training and cache them on disk; otherwise the "
        "reference runs each step (LoRA: the base with the adapter disabled; full: a frozen copy).")
    ref_cache_dir: str = Field("", description="Where precomputed reference log-probs are cached; '' = ~/.cache/tunesmith/ref-logps.")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: weight of desirable (label true) examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: weight of undesirable (label false) examples.")


# --- prepare (issue 4): data hygiene before training ---------------------------------------------


class PrepareNormalizeConfig(_Section):
    unicode: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form applied to every text field (NFKC also folds look-alike characters).")
    whitespace: bool = Field(True, description="Drop zero-width characters and trailing spaces, turn \\r\\n into \\n, keep at most one blank line.")


class PrepareFiltersConfig(_Section):
    min_response_tokens: int = Field(1, ge=0, description="Drop rows whose shortest response has fewer tokens (target tokenizer); 0 = off.")
    max_response_tokens: int = Field(0, ge=0, description="Drop rows whose longest response has more tokens; 0 = off.")
    placeholders: bool = Field(True, description="Drop responses that are only a placeholder ('N/A', 'I don't know', 'TODO', ...).")
    max_repeat_ratio: float = Field(0.5, gt=0.0, le=1.0, description="Drop responses whose share of repeated word n-grams exceeds this; 1.0 = off.")
    repeat_ngram: int = Field(3, ge=1, description="n of the n-grams the repetition ratio counts.")
    truncated: bool = Field(True, description="Drop responses that look cut off (unclosed ``` fence, ending on ',' or a dangling word such as 'the').")
    json_output: bool = Field(False, description="The task's output is JSON: drop responses that do not parse (a ```json fence is allowed).")
    languages: list[str] = Field(default_factory=list, description="Keep only responses in these ISO 639-1 languages (needs `pip install langdetect`); empty = off.")


class PrepareDedupConfig(_Section):
    exact: bool = Field(True, description="Drop rows whose normalised text (case, spacing, punctuation folded) equals an earlier row's.")
    near: bool = Field(True, description="Drop near-duplicates found by MinHash LSH (needs datasketch); the first row of each cluster is kept.")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Estimated Jaccard similarity of word shingles at or above which two rows are near-duplicates.")
    shingle_size: int = Field(5, ge=1, description="Words per shingle for near-duplicate detection.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations; more = a more exact Jaccard estimate, slower.")


class PreparePIIConfig(_Section):
    action: Literal["redact", "drop", "off"] = Field("redact", description="redact: replace with typed placeholders (<EMAIL>); drop: drop the row; off: do nothing.")
    types: list[Literal["email", "phone", "credit_card", "ip_address", "iban", "api_key"]] = Field(
        default_factory=lambda: ["email", "phone", "credit_card", "ip_address", "iban", "api_key"],
        description="Kinds of personal data to find.",
    )


class PrepareContaminationConfig(_Section):
    benchmarks: list[str] = Field(default_factory=list, description="Benchmark files (any readable data file, e.g. gsm8k/test.jsonl); every text field of each item is checked.")
    ngram: int = Field(13, ge=4, description="Words per n-gram; a training row sharing one n-gram with a benchmark item is contaminated (GPT-3, sec. 4 / app. C).")
    min_item_words: int = Field(8, ge=1, description="Benchmark items shorter than `ngram` words are matched as a whole when they have at least this many words.")
    action: Literal["drop", "flag"] = Field("drop", description="drop contaminated rows, or keep them with the benchmark item in a `_contamination` column.")
    min_overlap: float = Field(0.0, ge=0.0, le=1.0, description="0: one shared n-gram makes a row contaminated (GPT-3). Above 0: the row must hold at least this share of one item's n-grams.")


class PrepareConfig(_Section):
    normalize: PrepareNormalizeConfig = Field(default_factory=PrepareNormalizeConfig)
    filters: PrepareFiltersConfig = Field(default_factory=PrepareFiltersConfig)
    dedup: PrepareDedupConfig = Field(default_factory=PrepareDedupConfig)
    pii: PreparePIIConfig = Field(default_factory=PreparePIIConfig)
    contamination: PrepareContaminationConfig = Field(default_factory=PrepareContaminationConfig)
    tokenizer: str = Field("", description="Tokenizer (directory or hub id) for token counts; empty = `model.path`; none at all = whitespace words.")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Held out as the eval split, per source (stratified), seeded by `seed`.")
    weights: list[float] = Field(default_factory=list, description="Mixing weights, one per `data.train` file (e.g. [0.8, 0.2]); the train split is downsampled to these shares. Empty = keep all.")
    seed: int = Field(42, description="Seed of the split and the mixing.")
    jsonl: bool = Field(False, description="Also write train.jsonl / eval.jsonl next to the Arrow splits.")
    progress: bool = Field(True, description="Show a progress bar on stderr.")

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, v: list[float]) -> list[float]:
        if any(w < 0 for w in v) or (v and sum(v) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum, e.g. [0.8, 0.2]")
        return v


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


class RunConfig(_Section):
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    method: Literal["sft", "pretrain", "reward", "dpo", "kto", "grpo", "rloo", "ppo"] = Field("sft", description="Training objective.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dpo: PreferenceConfig = Field(default_factory=PreferenceConfig, description="reward / dpo / kto settings.")
    output_dir: str = Field("runs/run", description="The run directory (refused when non-empty unless --overwrite or --resume).")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="`tunesmith prepare`: filters, dedup, PII, contamination, split and mix.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="`tunesmith eval` settings.")
    rl: RLConfig = Field(default_factory=RLConfig, description="grpo / rloo / ppo settings (rl_config.py).")

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.model.quantization != "none" and self.adapter.type == "none":
            raise ValueError(
                f"`model.quantization: {self.model.quantization}` needs an adapter: quantized weights cannot be "
                "trained in full; set `adapter.type: lora` (QLoRA) or `model.quantization: none`"
            )
        if self.train.fsdp and self.adapter.type == "adapter":
            raise ValueError("`train.fsdp` is not supported with `adapter.type: adapter` (bottleneck adapters are saved "
                             "from the live modules, not a gathered state dict); use DDP (`train.fsdp: false`)")
        if self.train.fsdp and self.model.quantization != "none":
            raise ValueError("`train.fsdp` cannot shard bitsandbytes-quantized weights; set `train.fsdp: false` "
                             "(QLoRA's frozen 4-bit base is small: DDP replicates it cheaply) or `model.quantization: none`")
        if self.adapter.is_prompt_learning() and self.data.packing:
            raise ValueError(
                f"`data.packing: true` cannot be combined with `adapter.type: {self.adapter.type}`: virtual tokens are "
                "prepended to the whole row, so packed examples would share them and PEFT ignores the per-example "
                "position_ids; set `data.packing: false`"
            )
        if self.adapter.type == "prefix" and self.train.gradient_checkpointing:
            raise ValueError(
                "`adapter.type: prefix` cannot be combined with `train.gradient_checkpointing: true`: the prefix is a "
                "key/value cache, which checkpointed layers recompute without (PEFT refuses it too); turn one off"
            )
        if self.adapter.type == "dora" and self.model.quantization == "int8":
            raise ValueError(
                "`adapter.type: dora` on `model.quantization: int8` is not supported: PEFT 0.21's DoRA on an 8-bit "
                "bitsandbytes layer fails in the forward (its int8 state is consumed by the weight-norm init); use "
                "`model.quantization: nf4` (QDoRA) or `adapter.type: lora`"
            )
        if self.adapter.init in ("pissa", "olora") and self.model.quantization != "none":
            raise ValueError(
                f"`adapter.init: {self.adapter.init}` rewrites the base weights from their SVD/QR and cannot start from "
                f"`model.quantization: {self.model.quantization}`; use init: default/gaussian or model.quantization: none"
            )
        if self.method == "pretrain" and self.data.format not in ("auto", "text"):
            raise ValueError("`method: pretrain` trains on raw text; set `data.format: text` (or auto)")
        check_rl(self)
        return self

    @model_validator(mode="after")
    def _preference_consistent(self) -> RunConfig:
        if self.method not in ("reward", "dpo", "kto"):
            return self
        if self.data.format != "auto":
            raise ValueError(f"`method: {self.method}` reads preference rows (prompt/chosen/rejected, HH transcripts or "
                             "prompt/completion/label); set `data.format: auto` and map fields with `data.columns`")
        if self.dpo.max_prompt_length >= self.data.max_length:
            raise ValueError(f"`dpo.max_prompt_length` ({self.dpo.max_prompt_length}) must be < `data.max_length` "
                             f"({self.data.max_length}) to leave room for the response")
        if self.adapter.is_prompt_learning():
            raise ValueError(f"`method: {self.method}` does not support `adapter.type: {self.adapter.type}`: the preference "
                             "and reward forwards read the backbone directly, where virtual tokens never enter; use lora, "
                             "dora, ia3, adapter or none")
        if self.method in ("dpo", "kto") and self.adapter.init in ("pissa", "olora") and self.adapter.type in ("lora", "dora"):
            raise ValueError(f"`adapter.init: {self.adapter.init}` rewrites the base weights into a residual, so the base "
                             "with the adapter disabled is no longer the reference model; use `adapter.init: default` or "
                             "`gaussian` for preference training")
        if self.train.loss_chunk_size == 0:
            raise ValueError(f"`train.loss_chunk_size: 0` (plain logits) is for sft/pretrain; `method: {self.method}` always "
                             "gathers its log-probs in chunks; leave loss_chunk_size at a positive value")
        if self.method == "kto" and self.train.micro_batch_size < 2:
            raise ValueError("`method: kto` estimates the KL term from mismatched pairs within a micro-batch, so "
                             "`train.micro_batch_size` must be >= 2 (PITFALLS 10)")
        if self.method == "kto" and self.dpo.precompute_ref:
            raise ValueError("`dpo.precompute_ref` is not available for `method: kto` (its KL pairs change every batch); set it to false")
        return self

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- loading -------------------------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "data.train=[a.jsonl,b.jsonl]"]` -> nested dict; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(f"override `{item}` is not of the form key.sub=value (e.g. train.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override `{item}`: `{p}` is already set to a value, not a section")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(err: dict, schema: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not isinstance(p, int) or True)
    key = ".".join(str(p) for p in loc) if loc else "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(schema, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean `{'.'.join(map(str, loc[:-1] + (close[0],)))}`?" if close else f"known keys here: {', '.join(known)}"
        return f"`{key}` is not a config key; {hint}"
    if kind == "missing":
        return f"`{key}` is required; add it to the config (or pass {key}=...)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg if not loc else f"`{key}`: {msg}"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"`{key}` = {shown}: {msg}"


def validate_config(raw: dict[str, Any], schema: type[BaseModel] = RunConfig, source: str = "config") -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, schema) for err in e.errors()]
        raise ConfigError(f"{source}: invalid config\n  - " + "\n  - ".join(lines)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model:, data:, train:, ...)")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, schema: type[BaseModel] = RunConfig) -> Any:
    """Read YAML (optional), apply dotted overrides, validate. Raises ConfigError naming the key."""
    raw = read_yaml(path) if path else {}
    raw = _merge(raw, parse_overrides(overrides or []))
    return validate_config(raw, schema, source=str(path) if path else "command line")
