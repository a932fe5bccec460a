"""The sequence task: one label per text (today's pipeline). What the model stages ask of a task, answered for it:
the label set, the split checks, the model and how texts are encoded for it, the recipe Trainer runs (trainer
class, collator, metric, the metric that picks the best checkpoint) and the baseline.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.core.metrics import label_config


class SequenceTask:
    name = "sequence"
    primary_metric = "macro_f1"  # metrics/eval.json's headline, and what early stopping and the best checkpoint use
    peft_task_type = "SEQ_CLS"  # peft.TaskType for LoRA

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
        from pipeline.core.training import encode

        return encode(frame, tokenizer, label_names, max_length, extra=extra, sort_by_length=sort_by_length,
                      truncation=truncation)

    def fit_recipe(self, tokenizer: Any, label_names: list[str]) -> dict[str, Any]:
        """What trainers.fit takes from the task: padding collation, macro-F1, the best checkpoint by macro-F1.
        (The trainer class is the stage's: the teacher's weighted loss, the student's distillation loss.)"""
        from transformers import DataCollatorWithPadding

        from pipeline.core.training import compute_metrics_fn

        return {"collator": DataCollatorWithPadding(tokenizer), "compute_metrics": compute_metrics_fn(label_names),
                "metric_for_best_model": self.primary_metric}

    def build_baseline(self, p: Any, seed: int, texts: list[str]) -> tuple[Any, str]:
        """The TF-IDF + logistic-regression baseline, unfitted, and the analyzer `auto` resolved to for `texts`:
        word n-grams where words are separated by spaces, character n-grams where they are not."""
        from pipeline.core.modeling import baseline_model
        from pipeline.core.profile import words_separated

        analyzer = p.analyzer if p.analyzer != "auto" else "word" if words_separated(texts) else "char_wb"
        return baseline_model(p, seed, analyzer), analyzer
