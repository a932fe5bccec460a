"""The sequence task: one label per text (today's pipeline). What the model stages ask of a task, answered for it:
the label set, the split checks, the model and how texts are encoded for it, the recipe Trainer runs (trainer
class, collator, metric, the metric that picks the best checkpoint) and the baseline.
"""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from pipeline.core.metrics import label_config

log = logging.getLogger(__name__)


class SequenceTask:
    name = "sequence"
    primary_metric = "macro_f1"  # metrics/eval.json's headline, and what early stopping and the best checkpoint use
    rebalance_exempt = frozenset()  # every class takes part in rebalancing
    peft_task_type = "SEQ_CLS"  # peft.TaskType for LoRA

    def __init__(self, params: Any = None) -> None:
        self.params = params

    def clean_file(self, path: str, params: Any, feedback: str | None = None) -> Any:
        """The raw table -> a CleanResult (kept rows, dropped rows with reasons), checked for a split."""
        from pipeline.core.sequence_clean import clean_file

        return clean_file(path, params, feedback)

    def feedback_classes(self, clean_table: Any, p: Any) -> list[str]:
        """What `finetune ingest` checks a labelled row against: the data's classes."""
        from pipeline.core.feedback import known_labels

        return known_labels(p, clean_table)

    def feedback_label(self, value: Any, text: str, known: list[str], p: Any, where: str) -> str:
        """A labelled row's label as the feedback file stores it (a class name), checked."""
        from pipeline.core.feedback import stored_label

        return stored_label(value, known, where)

    def feedback_key(self, text: str, p: Any) -> str:
        """A text as clean compares rows for repeats (so ingest skips what clean would drop)."""
        from pipeline.core.feedback import text_key

        return text_key(text, p)

    def raw_keys(self, raw_path: Any, params: Any) -> set[str]:
        from pipeline.core.feedback import raw_keys

        return raw_keys(raw_path, params)

    def diff_key(self, frame: pd.DataFrame) -> pd.Series:
        """What `lineage diff` compares to call a row relabelled: its class."""
        return frame["label"]

    def check_data(self, raw: str, params: Any) -> Any:
        """`finetune check`'s data part: a Report of every problem with the raw table, and notes."""
        from pipeline.core.data_check import check_table

        return check_table(raw, params)

    def clean_metrics(self, result: Any) -> dict:
        from pipeline.core.sequence_clean import stage_metrics

        return stage_metrics(result)

    def audit(self, df: pd.DataFrame, p: Any, seed: int) -> Any:
        """Likely mislabelled rows (an AuditResult), from out-of-fold TF-IDF + logistic regression."""
        from pipeline.core.sequence_audit import audit

        return audit(df, p, seed)

    def audit_metrics(self, df: pd.DataFrame, result: Any, p: Any) -> dict:
        from pipeline.core.sequence_audit import stage_metrics

        return stage_metrics(df, result, p)

    def check_augment(self, p: Any) -> None:
        """Synonym swap and back-translation apply to a text with one label; mention replacement needs entities."""
        if p.mentions.enabled is True:  # `auto` means off here: a text has no mentions
            from pipeline.core.param_errors import ParamsError

            raise ParamsError("augment.mentions.enabled: true, but mention replacement swaps entity mentions and the "
                              "sequence task has none (task: token has); set it to false")

    def augment(self, df: pd.DataFrame, p: Any, seed: int) -> Any:
        """Synonym-swap and back-translation variants of whole texts (sequence_augment.py)."""
        from pipeline.core.sequence_augment import augment_texts

        return augment_texts(df, p, seed)

    def label_names(self, train: pd.DataFrame) -> list[str]:
        from pipeline.core.training import label_names_of

        return label_names_of(train)

    def check_splits(self, splits: dict[str, pd.DataFrame], label_names: list[str]) -> None:
        from pipeline.core.training import check_splits

        check_splits(splits, label_names)

    def load_model(self, name: str, key: str, label_names: list[str], **kwargs: Any) -> Any:
        """A model to train for these labels (a new head where the checkpoint has none for them)."""
        from pipeline.core.modeling import load_classifier

        return load_classifier(name, key, **label_config(label_names), **kwargs)

    def load_trained(self, folder: str, key: str) -> Any:
        """A model this task trained (the teacher, for teacher_logits and distill), with its own labels."""
        from pipeline.core.modeling import load_classifier

        return load_classifier(folder, key)

    def encode(self, frame: pd.DataFrame, tokenizer: Any, label_names: list[str], max_length: int,
               truncation: str, sort_by_length: bool = False, extra: dict[str, list] | None = None) -> Any:
        """Rows -> a dataset of token ids and label ids; `extra` columns ride along (the student's targets)."""
        import numpy as np

        from pipeline.core.training import encode

        extra = {k: [np.asarray(x, dtype=np.float32).tolist() for x in v] for k, v in (extra or {}).items()} or None
        return encode(frame, tokenizer, label_names, max_length, extra=extra, sort_by_length=sort_by_length,
                      truncation=truncation)

    def trainer_class(self, base: type) -> type:
        """The stage's Trainer class as this task runs it (unchanged: a text's label travels with its prediction)."""
        return base

    def class_weights(self, setting: Any, ds: Any, label_names: list[str], key: str) -> tuple[Any, dict]:
        """The loss's class weights (None: unweighted) as `setting` resolves for this training set, and the record."""
        from pipeline.core.profile import resolve_class_weights

        return resolve_class_weights(setting, ds["label"], label_names, key)

    def fit_recipe(self, tokenizer: Any, label_names: list[str], val: Any = None, max_length: int = 0
                   ) -> dict[str, Any]:
        """What trainers.fit takes from the task: padding collation, macro-F1, the best checkpoint by macro-F1.
        (The trainer class is the stage's: the teacher's weighted loss, the student's distillation loss.)"""
        from transformers import DataCollatorWithPadding

        from pipeline.core.training import compute_metrics_fn

        return {"collator": DataCollatorWithPadding(tokenizer), "compute_metrics": compute_metrics_fn(label_names),
                "metric_for_best_model": self.primary_metric}

    def student_targets(self, args: Any, params: Any, train: pd.DataFrame, val: pd.DataFrame) -> tuple[list, dict]:
        """The student's targets for the training then the validation rows, and the record of the blend choice."""
        from pipeline.core.sequence_targets import student_targets

        return student_targets(args, params, train, val)

    def students(self, p: Any) -> list:
        """The students distill tries, in order: distill.try_first's, then distill's own."""
        return p.students()

    def export_models(self, sources: dict, out: Any, params: Any, train: pd.DataFrame, val: pd.DataFrame,
                      test: pd.DataFrame, test_path: str) -> dict:
        """Each model of `sources` to ONNX in out/<name>, int8 behind the macro-F1 parity gate; figures per model."""
        from pipeline.core.sequence_export import export_models

        return export_models(sources, out, params, train, val, test, test_path)

    def evaluate(self, args: Any, params: Any) -> None:
        """evaluate's work: score the four models on the test rows, compare, time, write, package."""
        from pipeline.core.sequence_evaluate import evaluate_all

        evaluate_all(args, params)

    def fit_baseline(self, params: Any, train: pd.DataFrame, val: pd.DataFrame, label_names: list[str],
                     folder: Any) -> tuple[Any, dict, dict]:
        """Fit the baseline on `train`, save it in `folder`; (its params section, validation metrics, what `auto`
        resolved to)."""
        from pipeline.core.metrics import classification_metrics, encode_labels
        from pipeline.core.modeling import BASELINE_FILE, save_baseline

        model, analyzer = self.build_baseline(params.baseline, params.seed, train["text"].tolist())
        log.info("baseline.analyzer %s -> %s", params.baseline.analyzer, analyzer)
        model = model.fit(train["text"], train["label"])
        # classes_ are the sorted label names, the same order as the transformer models' ids.
        scores = classification_metrics(encode_labels(val["label"], label_names, "val split"),
                                        encode_labels(model.predict(val["text"]), label_names, "baseline"),
                                        label_names)
        save_baseline(model, folder / BASELINE_FILE)
        return params.baseline, {"macro_f1": scores["macro_f1"]}, {"analyzer": analyzer}

    def build_baseline(self, p: Any, seed: int, texts: list[str]) -> tuple[Any, str]:
        """The TF-IDF + logistic-regression baseline, unfitted, and the analyzer `auto` resolved to for `texts`:
        word n-grams where words are separated by spaces, character n-grams where they are not."""
        from pipeline.core.modeling import baseline_model
        from pipeline.core.profile import words_separated

        analyzer = p.analyzer if p.analyzer != "auto" else "word" if words_separated(texts) else "char_wb"
        return baseline_model(p, seed, analyzer), analyzer
