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
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, model_validator

from pipeline.core.param_errors import KeyedError, ParamsError, build
from pipeline.core.params_data import (
    RESERVED_COLUMNS,
    AuditParams,
    AugmentParams,
    BackTranslationParams,
    CleanParams,
    MentionParams,
    RebalanceParams,
    Section,
    SplitParams,
    SynonymParams,
    TokenParams,
    VariantFilterParams,
)

# Importers take every section, the loader and its errors from here (the definitions live in the modules above).
__all__ = ["RESERVED_COLUMNS", "AuditParams", "AugmentParams", "BackTranslationParams", "BaselineParams",
           "CleanParams", "DistillParams", "EvaluateParams", "ExportParams", "FitParams", "InferenceParams",
           "KeyedError", "LoraParams", "MentionParams", "Params", "ParamsError", "RebalanceParams", "RUN_ONLY_KEYS",
           "Section", "SplitParams", "StudentShape", "SynonymParams", "TrainParams", "VariantFilterParams", "as_dict",
           "build", "launcher_prefix", "load_params", "load_params_all_errors", "replace", "result_params", "schema"]


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
    selection_confidence: float = Field(0.9, ge=0.5, lt=1, description=(
        "one-sided confidence of the paired-bootstrap bounds that choose a student (and a blend weight)"))
    blend_baseline: Union[Annotated[float, Field(ge=0, le=1)], Literal["auto"]] = Field(0.0, description=(
        "the TF-IDF baseline's weight in the student's targets (log-linear blend with the teacher); 0 = the "
        "teacher alone. auto: chosen on validation rows, kept only when its log-loss gain is beyond noise "
        "(selection_confidence). Off by default: the evidence is bench/results/BLEND.md; "
        "metrics/teacher_blend.json says what auto would choose on your data"))
    epochs: float = Field(8.0, gt=0, description="with alpha 0.9: the student setting bench/results/STUDENTS.md "
                                                 "chose")
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


class CrfParams(Section):
    """The token task's baseline: a linear-chain CRF on word-shape features (python-crfsuite, L-BFGS)."""

    c1: float = Field(0.1, ge=0, description="L1 penalty")
    c2: float = Field(0.1, ge=0, description="L2 penalty")
    max_iterations: int = Field(100, ge=1)


class ExportParams(Section):
    """ONNX for deployment; the stage fails, with the figures, when the exported model disagrees with torch."""

    teacher: bool = Field(False, description="also export the teacher")
    quantize: Literal["auto", "int8", "int8_ffn_fp32", "int8_matmul_ffn_fp32", "none"] = Field(
        "auto", description="auto: the smallest int8 recipe that keeps the torch labels on the selection rows and "
                            "passes the test bounds, else fp32; a recipe by name: that one; none: fp32 "
                            "(bench/results/export-and-students.md)")
    selection_rows: int = Field(2000, ge=1, description="validation rows, topped up with training rows (never test "
                                                        "rows)")
    selection_agreement: float = Field(0.995, gt=0, le=1, description="share of selection rows on which a recipe "
                                                                      "must keep torch's label (task: token chooses "
                                                                      "by min_macro_f1_ratio of entity F1 instead)")
    max_logit_diff: float = Field(1e-3, gt=0, description="parity, fp32 ONNX vs torch, every test row")
    min_macro_f1_ratio: float = Field(0.98, gt=0, le=1, description="int8 test macro-F1 / torch's (task: token: "
                                                                    "entity F1, on the selection and test sentences)")
    min_agreement: float = Field(0.99, gt=0, le=1, description="share of rows on which the shipped model must keep "
                                                               "torch's label: the test rows refuse a recipe when "
                                                               "they show, at agreement_confidence, that it keeps "
                                                               "fewer (task: token: recorded, not gated)")
    agreement_confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of that verdict: two "
                                                                        "flipped near-ties among 125 test rows are "
                                                                        "noise, 20 among 1,000 are not")
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
    explain_rows: int = Field(1000, ge=0, description="test rows REPORT.md's 'Why the models decide' explains (the "
                                                      "shipped student, finetune explain's default method); 0 = off")


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
    task: Literal["sequence", "token"] = Field("sequence", description=(
        "what is learnt: sequence, one label per text | token, one tag per word (named entities: the raw file is "
        "CoNLL or JSONL, laid out as `tokens` says)"))
    clean: CleanParams = CleanParams()
    tokens: TokenParams = TokenParams()
    audit: AuditParams = AuditParams()
    augment: AugmentParams = AugmentParams()
    rebalance: RebalanceParams = RebalanceParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    distill: DistillParams = DistillParams()
    baseline: BaselineParams = BaselineParams()
    crf: CrfParams = CrfParams()
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
