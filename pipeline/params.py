"""Typed, validated params: one frozen dataclass per params.yaml section.

Every stage loads the whole file, so a typo anywhere fails every stage at start-up, naming the key
(`train.learning_rate: expected a number > 0, got -1`), before any data is read or model loaded.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ParamsError(ValueError):
    """A params.yaml problem; the message always starts with the dotted key."""


def _f(default: Any, **bounds: float) -> Any:
    """A field with optional numeric bounds (ge, gt, le, lt) checked at load."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=bounds)
    return field(default=default, metadata=bounds)


# ---------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class CleanParams:
    text_column: str = "text"
    label_column: str = "label"
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    encoding: str = "utf-8"
    # Raw label value (as written in the file) -> label name, e.g. {0: ham, 1: spam}. Unmapped values keep
    # their own text as name.
    label_names: dict[str, str] = _f({})
    # true: label_names are meant for this file even though they are the shipped SMS names ({0: ham, 1: spam}) and
    # the file is another (without it, check and clean stop rather than rename a stranger's 0/1 labels).
    confirm_label_names: bool = False
    # If non-empty, the only labels allowed (after label_names); any other is an error naming the row.
    allowed_labels: list[str] = _f([])
    missing_label: Literal["error", "drop"] = "error"
    fix_unicode: bool = True
    strip_html: bool = True
    mask_emails: bool = False
    mask_urls: bool = False
    mask_phones: bool = False
    lowercase: bool = False
    min_chars: int = _f(1, ge=1)
    # A safety cap, not a length policy: long documents are kept (train/distill choose how many tokens to read,
    # `max_length: auto`); only a text longer than this is dropped, counted as too_long.
    max_chars: int = _f(100_000, ge=1)
    dedup: Literal["none", "exact", "normalised"] = "normalised"
    # Extra raw columns (e.g. a group, source or language) carried through every stage to the test split;
    # evaluate reports metrics per value of each (slices).
    keep_columns: list[str] = _f([])
    # CSV/TSV records folded into one field by a stray quote, and bare carriage returns (pipeline/records.py):
    # error (stop, naming the row) | recover (split them back into rows, counted) | allow (keep what was read).
    multiline_records: Literal["error", "recover", "allow"] = "error"

    def validate(self, key: str) -> None:
        if self.min_chars > self.max_chars:
            raise ParamsError(f"{key}.min_chars: {self.min_chars} is larger than max_chars {self.max_chars}")
        clash = sorted(set(self.keep_columns) & RESERVED_COLUMNS)
        if clash:
            raise ParamsError(f"{key}.keep_columns: {clash} are names the pipeline uses itself; rename the column(s)")
        if len(set(self.keep_columns)) != len(self.keep_columns):
            raise ParamsError(f"{key}.keep_columns: lists a column twice: {self.keep_columns}")


# Columns the stages write themselves; a kept raw column may not take one of these names.
RESERVED_COLUMNS = frozenset({"id", "source_id", "origin", "text", "label", "raw_row", "reason", "similarity"})


@dataclass(frozen=True)
class AuditParams:
    """Label-noise audit: confident learning (cleanlab) on out-of-fold probabilities of TF-IDF + logistic reg."""

    enabled: bool = True
    action: Literal["report", "drop"] = "report"  # drop: flagged rows are removed, counted as `label_issue`
    folds: int = _f(5, ge=2, le=20)
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = "prune_by_noise_rate"
    ngram_max: int = _f(2, ge=1, le=6)
    C: float = _f(10.0, gt=0)
    max_iter: int = _f(2000, ge=1)


ClassSelector = Union[Literal["all", "minority"], list[str]]


@dataclass(frozen=True)
class SynonymParams:
    enabled: bool = False
    variants: int = _f(1, ge=1, le=20)
    classes: ClassSelector = "minority"
    aug_p: float = _f(0.1, gt=0, le=1)
    aug_min: int = _f(1, ge=1)
    aug_max: int = _f(10, ge=1)
    pos_tagger: Literal["textblob", "none"] = "textblob"


@dataclass(frozen=True)
class BackTranslationParams:
    enabled: bool = False
    backend: Literal["apertium", "hf"] = "apertium"
    classes: ClassSelector = "minority"
    # apertium: one variant per pivot language (eng -> pivot -> eng); a rule-based system is deterministic.
    source_lang: str = "eng"
    pivots: list[str] = _f(["spa"])
    # hf: any pair of Hugging Face seq2seq translation models; variants > 1 sample instead of greedy decoding.
    hf_forward_model: str = "Helsinki-NLP/opus-mt-en-es"
    hf_backward_model: str = "Helsinki-NLP/opus-mt-es-en"
    variants: int = _f(1, ge=1, le=20)
    temperature: float = _f(0.9, gt=0)
    batch_size: int = _f(32, ge=1)
    max_length: int = _f(256, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def validate(self, key: str) -> None:
        if not self.pivots:
            raise ParamsError(f"{key}.pivots: needs at least one pivot language")
        if self.backend == "apertium" and self.variants > len(self.pivots):
            raise ParamsError(
                f"{key}.variants: apertium is deterministic, so it gives one variant per pivot; "
                f"variants={self.variants} but pivots has {len(self.pivots)}"
            )


@dataclass(frozen=True)
class VariantFilterParams:
    """Drop variants that drift from their source (cosine similarity of sentence embeddings, length ratio)."""

    enabled: bool = True
    model: str = "sentence-transformers/all-MiniLM-L6-v2"  # any sentence-transformers model; bundled one offline
    min_similarity: float = _f(0.7, ge=0, le=1)
    min_length_ratio: float = _f(0.5, gt=0, le=1)  # variant characters / source characters
    max_length_ratio: float = _f(2.0, ge=1)
    batch_size: int = _f(64, ge=1)


@dataclass(frozen=True)
class AugmentParams:
    # `classes: minority` means classes with fewer than minority_ratio x the largest class's rows: a balanced
    # set augments nothing.
    minority_ratio: float = _f(0.8, gt=0, le=1)
    # Variants are added to a class only until it has max_ratio x the largest class's rows (before
    # augmentation); <= 1 never makes a minority class larger than the majority. The number of variants per
    # source row follows from that budget, capped by the methods' `variants`.
    max_ratio: float = _f(1.0, gt=0, le=10)
    # Skip augmentation (pass rows through) when the cleaned data has more than this many rows; 0 = no limit.
    max_rows: int = _f(0, ge=0)
    protect_tokens: bool = True  # URLs, e-mails, @handles, #hashtags, numbers, amounts stay unchanged
    filter: VariantFilterParams = field(default_factory=VariantFilterParams)
    synonym: SynonymParams = field(default_factory=SynonymParams)
    back_translation: BackTranslationParams = field(default_factory=BackTranslationParams)


@dataclass(frozen=True)
class RebalanceParams:
    strategy: Literal["oversample", "undersample", "none"] = "none"
    # After rebalancing every class has at least (oversample) / the largest at most (undersample)
    # target_ratio x ... of the other side: minority/majority >= target_ratio.
    target_ratio: float = _f(0.5, gt=0, le=1)


@dataclass(frozen=True)
class SplitParams:
    method: Literal["hash", "exact"] = "hash"  # hash: a row's split depends on its id and the seed only
    train: float = _f(0.8, gt=0, lt=1)
    val: float = _f(0.1, gt=0, lt=1)
    test: float = _f(0.1, gt=0, lt=1)

    def validate(self, key: str) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ParamsError(f"{key}: train + val + test must sum to 1, got {total:g}")


@dataclass(frozen=True)
class FitParams:
    """What teacher training and distillation share."""

    epochs: float = _f(3.0, gt=0)
    max_steps: int = _f(-1, ge=-1)  # > 0 overrides epochs (tests, quick sweeps)
    batch_size: int = _f(32, ge=1)
    eval_batch_size: int = _f(64, ge=1)
    gradient_accumulation_steps: int = _f(1, ge=1)
    learning_rate: float = _f(5e-5, gt=0, lt=1)
    weight_decay: float = _f(0.01, ge=0)
    warmup_ratio: float = _f(0.06, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    # Tokens read per text. auto: from the training rows' token lengths (the multiple of 64 that covers 99% of
    # them, at least 128), capped by the model's position limit and by max_length_cap (the cost budget: a
    # transformer's cost grows with length; 512 suits a GPU). The resolved number is in the model's lineage.
    max_length: Union[int, Literal["auto"]] = _f("auto", ge=8, le=8192)
    max_length_cap: int = _f(256, ge=8, le=8192)
    # A text longer than max_length: head keeps its first tokens; head_tail its first quarter and last three
    # quarters of the budget (Sun et al. 2019: the end of a long document says as much as its start). Applied as
    # a text transformation, so training, predict, serve and the ONNX model read the very same tokens.
    truncation: Literal["head", "head_tail"] = "head_tail"
    # Class-weighted loss ('balanced' weights from the training rows): true | false | auto (on when the largest
    # class has at least AUTO_CLASS_WEIGHT_RATIO times the rows of the smallest: README "Imbalance").
    class_weights: Union[bool, Literal["auto"]] = "auto"
    group_by_length: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    early_stopping_patience: int = _f(2, ge=0)  # 0 = off
    eval_steps: int = _f(0, ge=0)  # 0 = evaluate once per epoch
    num_threads: int = _f(0, ge=0)  # CPU threads for torch; 0 = torch's default
    # A resumable checkpoint every this many optimiser steps, besides each evaluation's (0 = only those): bounds
    # the work a kill loses. Does not change the model (a resumed run is byte-identical): not tracked by dvc.yaml.
    checkpoint_steps: int = _f(200, ge=0)


# Keys that change how a job runs, not what it produces: left out of dvc.yaml's params, the checkpoint
# fingerprint and the model's lineage, so switching them neither retrains nor changes a model folder's hash.
RUN_ONLY_KEYS = frozenset({"launcher", "resume", "num_threads", "checkpoint_steps"})


@dataclass(frozen=True)
class LoraParams:
    enabled: bool = False
    r: int = _f(8, ge=1)
    alpha: int = _f(16, ge=1)
    dropout: float = _f(0.1, ge=0, lt=1)
    target_modules: list[str] = _f(["query", "value"])


@dataclass(frozen=True)
class TrainParams(FitParams):
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    # "python", or e.g. "torchrun --nproc_per_node 2" / "accelerate launch": the train stage restarts itself under
    # it (an argument list, no shell). Not a result-changing param: dvc.yaml does not track it.
    launcher: str = "python"
    freeze_embeddings: bool = False
    freeze_layers: int = _f(0, ge=0)
    lora: LoraParams = field(default_factory=LoraParams)
    resume: bool = True

    def validate(self, key: str) -> None:
        launcher_prefix(self.launcher, f"{key}.launcher")


_FLAG = re.compile(r"[-\w=./:]+")


def launcher_prefix(launcher: str, key: str = "train.launcher") -> list[str] | None:
    """The argument list that starts a module under `launcher` (torchrun / accelerate launch, through this
    interpreter), or None for plain `python`. The one grammar for launchers, used at load and at launch: a known
    program and plain `--name=value`-like flags only, so `"touch x; python"` is an error, never a command."""
    import shlex
    import sys

    try:
        parts = shlex.split(launcher)
    except ValueError:
        parts = []
    if parts in (["python"], ["python3"]):
        return None
    if parts[:1] == ["torchrun"]:
        base, flags = [sys.executable, "-m", "torch.distributed.run"], parts[1:]
    elif parts[:2] == ["accelerate", "launch"]:
        base, flags = [sys.executable, "-m", "accelerate.commands.launch"], parts[2:]
    else:
        raise ParamsError(f"{key}: expected 'python', 'torchrun …' or 'accelerate launch …', got {launcher!r}")
    bad = [f for f in flags if not _FLAG.fullmatch(f)]
    if bad:
        raise ParamsError(f"{key}: flag(s) {bad} are not plain options")
    return [*base, *flags]


@dataclass(frozen=True)
class StudentShape:
    """One entry of distill.try_first: the keys it sets replace distill's own, the others are distill's."""

    layers: list[int] | None = None
    hidden_weight: float | None = _f(None, ge=0)
    intermediate_size: int | None = _f(None, ge=0)


@dataclass(frozen=True)
class DistillParams(FitParams):
    # Empty: the student is the teacher truncated to `layers`, initialised from those teacher layers.
    # Otherwise a (smaller) model name or path, fine-tuned from its own pre-trained weights.
    student: str = ""
    layers: list[int] = _f([0, 5])
    alpha: float = _f(0.5, ge=0, le=1)
    temperature: float = _f(2.0, gt=0)
    # Feed-forward width of the student: 0 keeps the model's own; smaller keeps, per layer, the neurons that carry
    # the most signal on training rows (structured pruning before distillation; checked against the model at build).
    intermediate_size: int = _f(0, ge=0)
    # Weight of a hidden-state term: mean squared error between the student's last hidden states and the
    # teacher's on every real token (the teacher runs alongside; needs the same hidden size and tokenizer).
    hidden_weight: float = _f(0.0, ge=0)
    # Smaller students distilled first, in order; the first whose validation macro-F1 keeps `min_val_f1_ratio` of
    # the teacher's ships, else the student the keys above describe (README "Use the model"). [] = only that one.
    try_first: list[StudentShape] = _f([StudentShape(layers=[5], hidden_weight=1.0)])
    # A try_first student ships only when the validation evidence says it keeps this share of the teacher's
    # macro-F1: the paired-bootstrap lower bound of student/teacher macro-F1 at selection_confidence (one-sided),
    # and no class's F1 significantly below the teacher's (Bonferroni over the classes). A point estimate on a few
    # hundred rows is too noisy to decide it (README "Which student ships").
    min_val_f1_ratio: float = _f(0.98, gt=0, le=1)
    selection_confidence: float = _f(0.9, ge=0.5, lt=1)

    def students(self, key: str = "distill") -> list[tuple[str, "DistillParams"]]:
        """(params key, the student's params) for each student to distill, in the order they are tried."""
        out = []
        for i, shape in enumerate(self.try_first):
            set_keys = {k: v for k, v in dataclasses.asdict(shape).items() if v is not None}
            out.append((f"{key}.try_first[{i}]", dataclasses.replace(self, **set_keys)))
        return [*out, (key, self)]

    def validate(self, key: str) -> None:
        for i, shape in enumerate(self.try_first):
            if self.student and shape.layers is not None:
                raise ParamsError(f"{key}.try_first[{i}].layers: only for a truncated teacher, but {key}.student is "
                                  f"set ({self.student!r}); set {key}.try_first to [] (or entries without layers)")
        for k, q in self.students(key):
            if not q.student:
                if not q.layers:
                    raise ParamsError(f"{k}.layers: needs at least one teacher layer to keep")
                if any(i < 0 for i in q.layers) or len(set(q.layers)) != len(q.layers):
                    raise ParamsError(f"{k}.layers: must be distinct non-negative indices, got {q.layers}")


@dataclass(frozen=True)
class BaselineParams:
    # auto: word n-grams where the text separates words with spaces, character n-grams (char_wb) where it does not
    # (Chinese, Japanese, Thai: a word analyzer would see each clause as one token).
    analyzer: Literal["auto", "word", "char_wb"] = "auto"
    ngram_max: int = _f(2, ge=1, le=6)
    min_df: int = _f(1, ge=1)
    max_features: int = _f(100_000, ge=1)
    sublinear_tf: bool = True
    C: float = _f(10.0, gt=0)
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = _f(2000, ge=1)


@dataclass(frozen=True)
class ExportParams:
    """ONNX export of the student (and optionally the teacher), int8 by onnxruntime dynamic quantisation; the
    stage fails, with the figures, when the exported model does not agree with the torch one."""

    teacher: bool = False  # also export the teacher (data/models/onnx/teacher)
    # auto: the first int8 recipe (pipeline/onnx_model.RECIPES, smallest first) whose labels agree with torch on
    # `selection_agreement` of the selection rows and that passes the test-row bounds below, else the fp32 graph |
    # one recipe by name (a miss on the bounds is an error) | none (fp32)
    quantize: Literal["auto", "int8", "int8_ffn_fp32", "int8_matmul_ffn_fp32", "none"] = "auto"
    # Selection rows: every validation row, then a seeded sample of training rows, never test rows (the test rows
    # only judge a recipe the selection rows accepted). Agreement needs no labels, so training rows are fair to use.
    selection_rows: int = _f(2000, ge=1)
    selection_agreement: float = _f(0.995, gt=0, le=1)
    max_logit_diff: float = _f(1e-3, gt=0)  # fp32 ONNX vs torch, every test row
    min_macro_f1_ratio: float = _f(0.98, gt=0, le=1)  # int8 macro-F1 / torch macro-F1 on test
    min_agreement: float = _f(0.99, gt=0, le=1)  # share of test rows where int8 and torch predict the same label
    batch_size: int = _f(32, ge=1)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = _f(32, ge=1)  # throughput is measured at this batch size
    latency_runs: int = _f(50, ge=1)  # batch-1 forward passes timed for latency
    throughput_batches: int = _f(8, ge=1)
    num_threads: int = _f(0, ge=0)
    max_misclassified: int = _f(500, ge=0)
    bootstrap_resamples: int = _f(1000, ge=100)  # test-row resamples for each confidence interval
    confidence: float = _f(0.95, gt=0.5, lt=1)
    calibrate: bool = True  # temperature scaling fitted on validation, applied to the packaged transformer models
    calibration_bins: int = _f(15, ge=2, le=100)


@dataclass(frozen=True)
class Params:
    seed: int = _f(42, ge=0)
    clean: CleanParams = field(default_factory=CleanParams)
    audit: AuditParams = field(default_factory=AuditParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    rebalance: RebalanceParams = field(default_factory=RebalanceParams)
    split: SplitParams = field(default_factory=SplitParams)
    train: TrainParams = field(default_factory=TrainParams)
    distill: DistillParams = field(default_factory=DistillParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    export: ExportParams = field(default_factory=ExportParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


# ---------------------------------------------------------------------------------------------- loading
def load_params(path: str | Path = "params.yaml") -> Params:
    params, errors = load_params_all_errors(path)
    if errors:
        raise ParamsError(errors[0])
    return params


def load_params_all_errors(path: str | Path = "params.yaml") -> tuple[Params | None, list[str]]:
    """Load params.yaml collecting every problem (the `check` command lists them all at once); each message
    starts with the file and the dotted key. A key with a problem keeps its default in the returned Params."""
    path = Path(path)
    if not path.is_file():
        return None, [f"{path}: params file not found"]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        return None, [f"{path}: not valid YAML: {e}"]
    errors: list[str] = []
    try:
        params = build(Params, raw, "", errors)
    except ParamsError as e:  # the file is not a mapping at all
        return None, [f"{path}: {e}"]
    return params, [f"{path}: {e}" for e in errors]


def build(cls: type, data: Any, key: str, errors: list[str] | None = None) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and bounds; `key` is the dotted prefix.

    With `errors`, problems are appended there (the key keeps its default) instead of raised."""
    where = key or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__}")
    collect = errors if errors is not None else None

    def problem(e: ParamsError) -> None:
        if collect is None:
            raise e
        collect.append(str(e))

    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(map(str, data)) - set(fields)):
        k = f"{key}.{name}" if key else name
        problem(ParamsError(f"{k}: unknown key (known keys: {', '.join(sorted(fields))})"))
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        k = f"{key}.{name}" if key else name
        if name in data:
            try:
                if dataclasses.is_dataclass(hints[name]):
                    v = build(hints[name], data[name], k, collect)
                else:
                    v = _coerce(data[name], hints[name], k)
                    _check_bounds(v, f.metadata, k)
            except ParamsError as e:
                problem(e)
                continue
            values[name] = v
    obj = cls(**values)
    if hasattr(obj, "validate"):
        try:
            obj.validate(where)
        except ParamsError as e:
            problem(e)
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(v: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, v, key)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(v, alt, key)
            except ParamsError as e:
                errors.append(str(e).split(": ", 1)[1])
        raise ParamsError(f"{key}: {' or '.join(errors)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if v not in choices:
            raise ParamsError(f"{key}: expected one of {list(choices)}, got {v!r}")
        return v
    if origin is list:
        if not isinstance(v, list):
            raise ParamsError(f"{key}: expected a list, got {v!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(x, item, f"{key}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise ParamsError(f"{key}: expected a mapping, got {v!r}")
        kt, vt = typing.get_args(tp)
        # YAML reads `0: ham` with an int key; raw labels are compared as text, so keys become strings.
        return {str(k): _coerce(x if vt is not str else str(x), vt, f"{key}.{k}") for k, x in v.items()}
    if tp is bool:
        if not isinstance(v, bool):
            raise ParamsError(f"{key}: expected true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParamsError(f"{key}: expected an integer, got {v!r}")
        return v
    if tp is float:
        # PyYAML reads `1e-5` (no dot) as a string: accept any numeric string rather than surprise users.
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise ParamsError(f"{key}: expected a number, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ParamsError(f"{key}: expected a string, got {v!r}")
        return v
    raise ParamsError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover - programming error


def _check_bounds(v: Any, bounds: typing.Mapping[str, float], key: str) -> None:
    if not bounds or not isinstance(v, (int, float)):
        return
    for op, limit in bounds.items():
        ok = {"ge": v >= limit, "gt": v > limit, "le": v <= limit, "lt": v < limit}[op]
        if not ok:
            sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
            raise ParamsError(f"{key}: expected a number {sym} {limit:g}, got {v!r}")


def as_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def result_params(obj: Any) -> dict:
    """A section's params without the RUN_ONLY_KEYS: what a model's identity depends on."""
    return {k: v for k, v in as_dict(obj).items() if k not in RUN_ONLY_KEYS}
