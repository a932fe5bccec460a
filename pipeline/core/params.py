"""Typed, validated params: one frozen pydantic model per params.yaml section, and the one source of defaults.

Every stage loads the whole file, so a typo anywhere fails every stage at start-up, naming the key
(`train.learning_rate: expected a number > 0, got -1`), before any data is read or model loaded; `finetune check`
lists every problem of the file at once. The defaults below are exactly what params.yaml says (tests/core/test_params.py
compares every key), so code that builds params without the file runs what `dvc repro` runs; the JSON Schema of
the file (params.schema.json, `python scripts/params_schema.py`) is generated from these models, descriptions
included, and the params reference in docs/params.md from that schema.
"""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """A params.yaml problem; the message always starts with the dotted key."""


class KeyedError(ValueError):
    """Raised by a section's cross-field check: `key` is relative to the section ("" for the section itself)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


class Section(BaseModel):
    """Frozen, no unknown keys, no silent type conversion (a quoted "32" is not an integer), except that a numeric
    string is a number where a float is expected: PyYAML reads `1e-5` (no dot) as a string."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numeric_strings(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str) and _is_float(cls.model_fields[info.field_name].annotation):
            try:
                return float(v)
            except ValueError:
                return v
        return v


def _is_float(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_is_float(a) for a in typing.get_args(tp) if a is not type(None))
    return tp is float


# ---------------------------------------------------------------------------------------------- sections
# Columns the stages write themselves; a kept raw column may not take one of these names.
RESERVED_COLUMNS = frozenset({"id", "source_id", "origin", "text", "label", "raw_row", "reason", "similarity"})


class CleanParams(Section):
    text_column: str = Field("text", description="the raw file's text column")
    label_column: str = Field("spam", description="the raw file's label column (the bundled SMS file's is `spam`)")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="auto: from the file's extension (`.gz` too)")
    encoding: str = Field("utf-8", description="e.g. latin-1 or cp1252 for legacy exports; a wrong one is an "
                                               "error naming the line")
    label_names: dict[str, str] = Field(
        {"0": "ham", "1": "spam"},
        description="raw label -> name; unmapped labels keep their own text; {} keeps every label as written. "
                    "The default is the SMS file's: on another file it is an error unless confirm_label_names")
    confirm_label_names: bool = Field(
        False, description="true: label_names are meant for this file even though they are the SMS file's names")
    allowed_labels: list[str] = Field([], description="non-empty: any other label (after label_names) is an "
                                                      "error naming the row")
    missing_label: Literal["error", "drop"] = Field("error", description="drop: counted as missing_label")
    fix_unicode: bool = Field(True, description="ftfy: repair mojibake such as `donâ€™t`")
    strip_html: bool = True
    mask_emails: bool = False
    mask_urls: bool = False
    mask_phones: bool = False
    lowercase: bool = False
    min_chars: int = Field(2, ge=1, description="shorter texts are dropped, counted as too_short")
    max_chars: int = Field(100_000, ge=1, description="a safety cap only (counted as too_long): long documents are "
                                                      "kept, and train/distill choose how many tokens to read")
    dedup: Literal["none", "exact", "normalised"] = Field(
        "normalised", description="normalised: case, punctuation and spacing ignored")
    keep_columns: list[str] = Field([], description="extra raw columns carried to the test split; evaluate "
                                                    "reports metrics per value of each")
    multiline_records: Literal["error", "recover", "allow"] = Field(
        "recover", description="CSV/TSV records folded into one field by a stray quote (the bundled file has 8, "
                               "hiding 737 messages): error stops naming the row, recover splits them back into "
                               "rows (counted), allow keeps what the reader parsed")

    @field_validator("label_names", mode="before")
    @classmethod
    def _labels_as_text(cls, v: Any) -> Any:
        # YAML reads `0: ham` with an int key; raw labels are compared as text.
        if isinstance(v, dict):
            return {str(k): x if isinstance(x, (dict, list)) else str(x) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CleanParams:
        if self.min_chars > self.max_chars:
            raise KeyedError("min_chars", f"{self.min_chars} is larger than max_chars {self.max_chars}")
        clash = sorted(set(self.keep_columns) & RESERVED_COLUMNS)
        if clash:
            raise KeyedError("keep_columns", f"{clash} are names the pipeline uses itself; rename the column(s)")
        if len(set(self.keep_columns)) != len(self.keep_columns):
            raise KeyedError("keep_columns", f"lists a column twice: {self.keep_columns}")
        return self


class AuditParams(Section):
    """Label-noise audit: confident learning (cleanlab) on out-of-fold probabilities of TF-IDF + logistic reg.

    The features are the `features` most frequent word n-grams (hashed into 2^22 buckets, so no vocabulary is
    built), with TF-IDF weights fitted once on every row (no labels involved), and each fold's model is fitted
    with the saga solver on at most `max_train_rows` rows of the other folds: a million rows cost minutes, not an
    hour (bench/results/SCALE.md, which also measures how the flags compare with the per-fold vocabulary and
    lbfgs the audit used first)."""

    enabled: bool = True
    action: Literal["report", "drop"] = Field("report", description="report: rows flow on unchanged | drop: "
                                                                    "flagged rows removed, counted as label_issue")
    folds: int = Field(5, ge=2, le=20)
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = Field("prune_by_noise_rate",
                                                      description="cleanlab's find_label_issues filter")
    ngram_max: int = Field(2, ge=1, le=6)
    features: int = Field(100_000, ge=1024, le=2**22, description="the most frequent word n-grams kept as "
                                                                  "features")
    C: float = Field(10.0, gt=0)
    max_iter: int = Field(100, ge=1, description="saga epochs at most (it stops earlier at a relative change of "
                                                 "1e-3)")
    max_train_rows: int = Field(100_000, ge=0, description="rows each fold's model trains on at most (a seeded "
                                                           "sample of the other folds); 0 = all of them")
    jobs: int = Field(0, ge=0, description="processes for the folds and the hashing; 0 = every core. Does not "
                                           "change the result, so not tracked by dvc.yaml")


ClassSelector = Union[Literal["all", "minority"], list[str]]


class SynonymParams(Section):
    """nlpaug SynonymAug over WordNet 3.0, POS from textblob's offline tagger."""

    enabled: bool = Field(False, description="off: the ablation found no gain (bench/results/ablation-notes.md)")
    variants: int = Field(1, ge=1, le=20, description="variants per source row")
    classes: ClassSelector = Field("minority", description="all | minority | a list of labels")
    aug_p: float = Field(0.1, gt=0, le=1, description="fraction of tokens considered for a swap")
    aug_min: int = Field(1, ge=1)
    aug_max: int = Field(10, ge=1)
    pos_tagger: Literal["textblob", "none"] = "textblob"


class BackTranslationParams(Section):
    enabled: bool = Field(False, description="off: the ablation found no gain (bench/results/ablation-notes.md)")
    backend: Literal["apertium", "hf"] = Field(
        "apertium", description="apertium (offline, rule-based) | hf (a Hugging Face seq2seq pair, GPU if present)")
    classes: ClassSelector = "minority"
    source_lang: str = "eng"
    pivots: list[str] = Field(["spa"], description="apertium: one variant per pivot, eng -> pivot -> eng")
    variants: int = Field(1, ge=1, le=20)
    hf_forward_model: str = "Helsinki-NLP/opus-mt-en-es"
    hf_backward_model: str = "Helsinki-NLP/opus-mt-es-en"
    temperature: float = Field(0.9, gt=0, description="hf with variants > 1 samples at this temperature")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(256, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> BackTranslationParams:
        if not self.pivots:
            raise KeyedError("pivots", "needs at least one pivot language")
        if self.backend == "apertium" and self.variants > len(self.pivots):
            raise KeyedError("variants", f"apertium is deterministic, so it gives one variant per pivot; "
                                         f"variants={self.variants} but pivots has {len(self.pivots)}")
        return self


class VariantFilterParams(Section):
    """Drop variants that drift from their source (cosine similarity of sentence embeddings, length ratio)."""

    enabled: bool = True
    model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="a sentence-transformers encoder")
    min_similarity: float = Field(0.7, ge=0, le=1, description="cosine of sentence embeddings, variant vs source "
                                                              "(bench/results/augmentation-notes.md)")
    min_length_ratio: float = Field(0.5, gt=0, le=1, description="variant characters / source characters")
    max_length_ratio: float = Field(2.0, ge=1)
    batch_size: int = Field(64, ge=1)


class AugmentParams(Section):
    minority_ratio: float = Field(0.8, gt=0, le=1, description="`classes: minority` = classes with fewer than this "
                                                              "x the largest class's rows")
    max_ratio: float = Field(1.0, gt=0, le=10, description="add variants to a class only until it has this x the "
                                                          "largest class's rows (and never past a larger class)")
    max_rows: int = Field(0, ge=0, description="skip augmentation above this many cleaned rows; 0 = no limit")
    protect_tokens: bool = Field(True, description="URLs, e-mails, @handles, #hashtags, numbers and amounts are "
                                                   "never changed")
    filter: VariantFilterParams = VariantFilterParams()
    synonym: SynonymParams = SynonymParams()
    back_translation: BackTranslationParams = BackTranslationParams()


class RebalanceParams(Section):
    strategy: Literal["oversample", "undersample", "none"] = Field(
        "none", description="the ablation: oversampling no better, once worse (class weights handle imbalance)")
    target_ratio: float = Field(0.5, gt=0, le=1, description="smallest class / largest class after rebalancing")


class SplitParams(Section):
    method: Literal["hash", "exact"] = Field(
        "hash", description="hash: a row's split depends only on its id and the seed, so rows never move between "
                            "splits when data is added, removed or relabelled | exact: exact counts per class")
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    fold: int = Field(0, ge=0, description=(
        "hash only: which slice of the hash is test (0 = the last `test` share). Folds 0..k-1 (k = 1/test) have "
        "disjoint test rows: run them as experiments and pool their test predictions with `finetune kfold` when "
        "one test split is too small to settle a comparison"))

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise KeyedError("", f"train + val + test must sum to 1, got {total:g}")
        if self.fold and self.method != "hash":
            raise KeyedError("fold", "folds rotate the hash split; with method: exact only fold 0 exists")
        if self.fold >= self.folds:
            raise KeyedError("fold", f"test {self.test:g} gives {self.folds} disjoint folds (0..{self.folds - 1}), "
                                     f"got {self.fold}")
        return self

    @property
    def folds(self) -> int:
        """How many disjoint test slices the hash holds at this test share."""
        return max(1, int(1 / self.test + 1e-9))


class FitParams(Section):
    """What teacher training and distillation share."""

    epochs: float = Field(3.0, gt=0)
    min_steps: int = Field(600, ge=0, description=(
        "small data: epochs are raised until training takes this many optimiser steps, at most max_epochs "
        "(0 = off). Teachers trained for 45-170 steps lost to the TF-IDF baseline (docs/your-data.md)"))
    max_epochs: float = Field(10.0, gt=0, description="the ceiling min_steps may raise epochs to; early stopping "
                                                      "may end training sooner, not before min_steps")
    max_steps: int = Field(-1, ge=-1, description="> 0 overrides epochs")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_length: Union[Annotated[int, Field(ge=8, le=8192)], Literal["auto"]] = Field("auto", description=(
        "tokens read per text. auto: the multiple of 64 covering 99% of the training rows' tokens, >= 128, <= the "
        "model's limit and max_length_cap; the resolved value is in the model's lineage"))
    max_length_cap: int = Field(256, ge=8, le=8192, description="the cost budget of max_length: auto (512 suits a "
                                                                "GPU)")
    truncation: Literal["head", "head_tail"] = Field("head_tail", description=(
        "a longer text: head keeps its first tokens; head_tail its first quarter and last three quarters of the "
        "budget, as a text transformation, so predict, serve and the ONNX model read the very same tokens"))
    class_weights: Union[bool, Literal["auto"]] = Field("auto", description=(
        "class-weighted loss ('balanced' weights from the training rows); auto: on when the largest class has >= "
        "3x the rows of the smallest (docs/your-data.md)"))
    group_by_length: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16/fp16 on a GPU, fp32 "
                                                                                   "on CPU")
    early_stopping_patience: int = Field(2, ge=0, description="evaluations without a better validation macro-F1 "
                                                              "before stopping (counted from the start, acted on "
                                                              "once min_steps are done); 0 = off")
    eval_steps: int = Field(0, ge=0, description="0 = evaluate each epoch")
    num_threads: int = Field(0, ge=0, description="CPU threads; 0 = torch's default")
    checkpoint_steps: int = Field(200, ge=0, description=(
        "a resumable checkpoint every this many optimiser steps besides each evaluation's; does not change the "
        "model (a resumed run is byte-identical), so not tracked by dvc.yaml"))


# Keys that change how a job runs, not what it produces: left out of dvc.yaml's params, the checkpoint
# fingerprint and the model's lineage, so switching them neither retrains nor changes a model folder's hash.
RUN_ONLY_KEYS = frozenset({"launcher", "resume", "num_threads", "checkpoint_steps", "jobs"})


class LoraParams(Section):
    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]


class TrainParams(FitParams):
    """The teacher."""

    model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="a Hub name or a local folder; "
                                                                             "bundled models load offline")
    launcher: str = Field("python", description=(
        "python, or e.g. `torchrun --nproc_per_node 2` / `accelerate launch`: the stage restarts itself under it "
        "(an argument list, never a shell); not tracked by dvc.yaml"))
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    lora: LoraParams = LoraParams()
    resume: bool = Field(True, description="resume from the last complete checkpoint of the same job")

    @model_validator(mode="after")
    def _launcher(self) -> TrainParams:
        try:
            launcher_prefix(self.launcher, "launcher")
        except ParamsError as e:
            raise KeyedError("launcher", str(e).split(": ", 1)[1]) from None
        return self


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


class StudentShape(Section):
    """One entry of distill.try_first: the keys it sets replace distill's own, the others are distill's."""

    layers: Optional[list[int]] = None
    hidden_weight: Optional[Annotated[float, Field(ge=0)]] = None
    intermediate_size: Optional[Annotated[int, Field(ge=0)]] = None


class DistillParams(FitParams):
    """The student."""

    student: str = Field("", description='"" = the teacher truncated to `layers` (initialised from them); or a '
                                         'smaller model name or path, fine-tuned from its own weights')
    layers: list[int] = Field([0, 5], description="teacher layers the student keeps")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) loss; 1 - alpha goes to the "
                                                      "true labels")
    temperature: float = Field(2.0, gt=0)
    intermediate_size: int = Field(0, ge=0, description=(
        "feed-forward width; 0 = the teacher's. Smaller keeps, per layer, the neurons that carry the most signal "
        "on training rows (bench/results/export-and-students.md)"))
    hidden_weight: float = Field(0.0, ge=0, description=(
        "> 0 adds hidden_weight x MSE(student, teacher last hidden states); the teacher runs alongside"))
    try_first: list[StudentShape] = Field([StudentShape(layers=[5], hidden_weight=1.0)], description=(
        "smaller students distilled first (keys replace the ones above); the first that the validation evidence "
        "says keeps min_val_f1_ratio of the teacher's macro-F1 ships, else the student above; [] = only that one"))
    min_val_f1_ratio: float = Field(0.98, gt=0, le=1, description=(
        "judged on the paired-bootstrap lower bound at selection_confidence (one-sided), with no class "
        "significantly worse than the teacher's (docs/your-data.md)"))
    selection_confidence: float = Field(0.9, ge=0.5, lt=1)
    blend_baseline: Union[Annotated[float, Field(ge=0, le=1)], Literal["auto"]] = Field(0.0, description=(
        "the TF-IDF baseline's weight in the student's targets (log-linear blend with the teacher); 0 = the "
        "teacher alone. auto: chosen on validation rows, kept only when its log-loss gain is beyond noise "
        "(selection_confidence). Off by default: on two non-English sets it moved the student by +0.05 and -0.05, "
        "neither significant (bench/results/BLEND.md); metrics/teacher_blend.json says what auto would choose"))
    epochs: float = Field(8.0, gt=0, description="alpha 0.9 + 8 epochs: 98.6% of the teacher's test macro-F1 on "
                                                 "tweets (3 epochs, alpha 0.5: 93.1%)")
    early_stopping_patience: int = Field(3, ge=0)

    def students(self, key: str = "distill") -> list[tuple[str, DistillParams]]:
        """(params key, the student's params) for each student to distill, in the order they are tried."""
        out = []
        for i, shape in enumerate(self.try_first):
            set_keys = {k: v for k, v in shape.model_dump().items() if v is not None}
            out.append((f"{key}.try_first[{i}]", self.model_copy(update=set_keys)))
        return [*out, (key, self)]

    @model_validator(mode="after")
    def _students(self) -> DistillParams:
        for i, shape in enumerate(self.try_first):
            if self.student and shape.layers is not None:
                raise KeyedError(f"try_first[{i}].layers", f"only for a truncated teacher, but student is set "
                                                            f"({self.student!r}); set try_first to [] (or entries "
                                                            "without layers)")
        for k, q in self.students(""):
            k = k.lstrip(".")
            if not q.student:
                if not q.layers:
                    raise KeyedError(f"{k}.layers".lstrip("."), "needs at least one teacher layer to keep")
                if any(i < 0 for i in q.layers) or len(set(q.layers)) != len(q.layers):
                    raise KeyedError(f"{k}.layers".lstrip("."),
                                     f"must be distinct non-negative indices, got {q.layers}")
        return self


class BaselineParams(Section):
    """TF-IDF + logistic regression."""

    analyzer: Literal["auto", "word", "char_wb"] = Field("auto", description=(
        "auto: word n-grams where the text separates words with spaces, character n-grams (char_wb) where it "
        "does not (Chinese, Japanese, Thai)"))
    ngram_max: int = Field(2, ge=1, le=6)
    min_df: int = Field(1, ge=1)
    max_features: int = Field(100_000, ge=1)
    sublinear_tf: bool = True
    C: float = Field(10.0, gt=0)
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = Field(2000, ge=1)


class ExportParams(Section):
    """ONNX for deployment; the stage fails, with the figures, when the exported model disagrees with torch."""

    teacher: bool = Field(False, description="also export the teacher")
    quantize: Literal["auto", "int8", "int8_ffn_fp32", "int8_matmul_ffn_fp32", "none"] = Field(
        "auto", description="auto: the smallest int8 recipe that keeps the torch labels on the selection rows and "
                            "passes the test bounds, else fp32 | a recipe by name | none (fp32)")
    selection_rows: int = Field(2000, ge=1, description="validation rows, topped up with training rows (never test "
                                                        "rows)")
    selection_agreement: float = Field(0.995, gt=0, le=1, description="share of selection rows on which a recipe "
                                                                      "must keep torch's label")
    max_logit_diff: float = Field(1e-3, gt=0, description="parity, fp32 ONNX vs torch, every test row")
    min_macro_f1_ratio: float = Field(0.98, gt=0, le=1, description="int8 test macro-F1 / torch's")
    min_agreement: float = Field(0.99, gt=0, le=1, description="share of test rows with the same predicted label")
    batch_size: int = Field(32, ge=1)


class EvaluateParams(Section):
    batch_size: int = Field(32, ge=1, description="CPU throughput is measured at this batch size")
    throughput_batches: int = Field(8, ge=1)
    latency_runs: int = Field(60, ge=1, description="batch-1 forward passes timed for latency")
    num_threads: int = Field(0, ge=0)
    max_misclassified: int = Field(200, ge=0, description="per model, highest-confidence errors first")
    bootstrap_resamples: int = Field(1000, ge=100, description="test-row resamples for each confidence interval")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    calibrate: bool = Field(True, description="fit a temperature on validation; packaged teacher/student output "
                                              "scaled probabilities")
    calibration_bins: int = Field(15, ge=2, le=100)


class InferenceParams(Section):
    """Where the stages that run a model over every row (teacher_logits, evaluate's scoring) run it: in this
    process, or on Ray Data. Outputs are byte-identical either way, so no stage tracks these keys (switching does
    not rerun anything)."""

    engine: Literal["local", "ray"] = Field("local", description="local: in this process | ray: Ray Data actor "
                                                                 "pool (the `distributed` extra)")
    address: Optional[str] = Field(None, description="ray: a running cluster (`auto`, `ray://host:10001`); "
                                                     "empty: an embedded cluster of this machine's cores")
    workers: int = Field(0, ge=0, description="ray: actors (one model copy each); 0 = one per CPU of the cluster")
    gpus_per_worker: float = Field(0, ge=0, description="ray: GPUs per actor (e.g. 1 on a GPU fleet)")


class Params(Section):
    """params.yaml: hyper-parameters only; paths live in dvc.yaml."""

    seed: int = Field(42, ge=0, description="every random choice derives from it")
    clean: CleanParams = CleanParams()
    audit: AuditParams = AuditParams()
    augment: AugmentParams = AugmentParams()
    rebalance: RebalanceParams = RebalanceParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    distill: DistillParams = DistillParams()
    baseline: BaselineParams = BaselineParams()
    export: ExportParams = ExportParams()
    evaluate: EvaluateParams = EvaluateParams()
    inference: InferenceParams = InferenceParams()


# ---------------------------------------------------------------------------------------------- loading
def load_params(path: str | Path = "params.yaml") -> Params:
    params, errors = load_params_all_errors(path)
    if errors:
        raise ParamsError(errors[0])
    return params


def load_params_all_errors(path: str | Path = "params.yaml") -> tuple[Params | None, list[str]]:
    """Load params.yaml collecting every problem (`finetune check` lists them all at once); each message starts
    with the file and the dotted key. A key with a problem keeps its default in the returned Params."""
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


def build(cls: type[Section], data: Any, key: str, errors: list[str] | None = None) -> Any:
    """Validate `data` as `cls`; `key` is the dotted prefix of its messages. With `errors`, every problem is
    appended there and the offending keys fall back to their defaults; otherwise the first is raised."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{key or 'params'}: expected a mapping, got {type(data).__name__}")
    data = _copy(data)
    seen: list[str] = []
    for _ in range(100):  # each pass removes at least one offending key
        try:
            result = cls.model_validate(data)
        except ValidationError as e:
            problems = messages(e, cls, key)
            if errors is None:
                raise ParamsError(problems[0][1]) from None
            for path, text in problems:
                if text not in seen:
                    seen.append(text)
                _remove(data, path)
            continue
        if errors is not None:
            errors.extend(seen)
        return result
    if errors is not None:  # pragma: no cover - a problem that removal cannot clear
        errors.extend(seen)
    return cls()


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _remove(data: dict, path: list[str]) -> None:
    """Drop the value at `path` (field names), so that the key falls back to its default."""
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not path:
        data.clear()
    elif isinstance(node, dict):
        node.pop(path[-1], None)


def messages(error: ValidationError, cls: type[Section], prefix: str) -> list[tuple[list[str], str]]:
    """pydantic's errors as (field path to remove, "dotted.key: what is wrong") in the pipeline's words; the
    alternatives of a union (`max_length`: an integer or "auto") are joined into one message."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for err in error.errors():
        fields, shown, owner = _walk(cls, err["loc"])
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("error"), KeyedError):
            ke = ctx["error"]
            fields = fields + [ke.key.split(".")[0].split("[")[0]] if ke.key else fields
            shown = ".".join(x for x in (shown, ke.key) if x)
            text = ke.message
        else:
            text = _phrase(err, owner)
        key = ".".join(x for x in (prefix, shown) if x) or "params"
        path, texts = grouped.setdefault(key, (fields, []))
        if text not in texts:
            texts.append(text)
    out = []
    for key, (path, texts) in grouped.items():
        tails = {t.rsplit(", got ", 1)[-1] for t in texts}
        if len(texts) > 1 and len(tails) == 1 and all(", got " in t for t in texts):
            texts = [t.rsplit(", got ", 1)[0] for t in texts]
            texts[-1] += f", got {tails.pop()}"
        out.append((path, f"{key}: {' or '.join(texts)}"))
    return out


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _walk(cls: type[Section], loc: tuple) -> tuple[list[str], str, type[BaseModel]]:
    """The field path (to remove), the dotted key (to show) and the model whose key the location ends in, of a
    pydantic error location; union member tags are skipped, list indices shown as [i]."""
    tp: Any = cls
    owner: type[BaseModel] = cls
    fields: list[str] = []
    shown = ""
    in_list = False
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
            lists = [a for a in members if typing.get_origin(a) is list]
            tp = lists[0] if lists and str(part).startswith("list") else members[0]
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            if not in_list:
                fields.append(part)
            shown = f"{shown}.{part}" if shown else part
            owner = tp
            tp = tp.model_fields[part].annotation if part in tp.model_fields else Any
        elif origin is list and isinstance(part, int):
            shown += f"[{part}]"
            in_list = True  # removing the whole list falls back to its default
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            shown = f"{shown}.{part}"
            in_list = True
            tp = typing.get_args(tp)[1]
        else:
            continue
    return fields, shown, owner


_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}
_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "dict": "a mapping", "model": "a mapping", "model_attributes": "a mapping"}


def _phrase(err: dict, owner: type[BaseModel]) -> str:
    kind, got = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key (known keys: {', '.join(sorted(owner.model_fields))})"
    if kind in _BOUNDS:
        name, sym = _BOUNDS[kind]
        return f"expected a number {sym} {ctx[name]:g}, got {got!r}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"expected one of [{choices}], got {got!r}"
    if kind == "missing":
        return "required"
    base = kind.rsplit("_", 1)[0] if kind.endswith(("_type", "_parsing", "_from_float")) else kind
    base = {"int_from": "int"}.get(base, base)
    if base in _TYPES:
        return f"expected {_TYPES[base]}, got {got!r}"
    return f"{err['msg']}, got {got!r}"


def replace(obj: Section, **changes: Any) -> Any:
    """A copy of a params section with some keys changed (as dataclasses.replace; not validated again)."""
    return obj.model_copy(update=changes)


def as_dict(obj: Section) -> dict:
    return obj.model_dump()


def result_params(obj: Section) -> dict:
    """A section's params without the RUN_ONLY_KEYS: what a model's identity depends on."""
    return {k: v for k, v in as_dict(obj).items() if k not in RUN_ONLY_KEYS}


def schema() -> dict:
    """The JSON Schema of params.yaml (params.schema.json), descriptions and defaults included."""
    s = Params.model_json_schema(mode="validation")
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "finetune-pipeline params.yaml"
    return s
