"""Training and scoring a token-classification model on sentences of words: the windows as a dataset, entity F1 as
Trainer's evaluation metric, and per-word logits from a model (pipeline/core/token_encoding.py does the words).

What Trainer needs that differs from one label per text is small: a collator that pads the label sequences too
(transformers' DataCollatorForTokenClassification, with -100) and a metric that reads each validation word from
its best window before counting entities, the same reading prediction uses, so early stopping chooses the model
on the figure evaluate reports.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import SequentialSampler

from pipeline.core.entities import entity_counts, entity_f1
from pipeline.core.metrics import label_index
from pipeline.core.token_encoding import Encoded, encode_words, predicted_tags, word_logits
from pipeline.core.trainers import ResumableTrainer

PRIMARY = "entity_f1"  # Trainer logs it as eval_entity_f1; metric_for_best_model names it without the prefix


class TokenTrainer(ResumableTrainer):
    """The Trainer for token classification: ResumableTrainer's training, with validation windows scored in their
    own order. Under group_by_length transformers also length-groups evaluation batches, which a text classifier
    never notices (its labels travel with its predictions) but which would hand the entity metric its windows out
    of order: every word read from the wrong window."""

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        return SequentialSampler(eval_dataset)


def window_dataset(enc: Encoded) -> Any:
    """A `datasets.Dataset` of the windows (unpadded: the collator pads each batch), labels included when given."""
    import datasets

    data = dict(enc.features)
    if enc.labels is not None:
        data["labels"] = enc.labels
    return datasets.Dataset.from_dict(data)


def encode_frame(frame: Any, tokenizer: Any, label_names: list[str], max_length: int, stride: int,
                 with_labels: bool = True) -> Encoded:
    """A table of sentences (`tokens`, `tags` columns) -> windows, tags as ids of `label_names`."""
    tags = frame["tags"].tolist() if with_labels else None
    return encode_words(frame["tokens"].tolist(), tokenizer, max_length, stride, tags,
                        label_index(label_names) if with_labels else None)


def collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


def _window_rows(predictions: Any, enc: Encoded) -> list[np.ndarray]:
    """Trainer's padded [windows, positions, labels] -> each window's own positions."""
    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    return [np.asarray(logits[w][:len(ids)]) for w, ids in enumerate(enc.features["input_ids"])]


def metrics_fn(enc: Encoded, gold: list[list[str]], label_names: list[str]):
    """Trainer's compute_metrics for validation windows `enc` of sentences with `gold` BIO tags."""
    def compute(pred: Any) -> dict[str, float]:
        per_word, _ = word_logits(_window_rows(pred.predictions, enc), enc)
        tags = [predicted_tags(x, label_names)[0] for x in per_word]
        correct = sum(p == g for ps, gs in zip(tags, gold) for p, g in zip(ps, gs))
        return {PRIMARY: entity_f1(entity_counts(gold, tags)), "token_accuracy": correct / sum(map(len, gold))}

    return compute


def predict_word_logits(model: Any, enc: Encoded, batch_size: int = 32, device: str = "cpu") -> tuple[list, int]:
    """Per sentence [words, labels] logits from `model` over windows `enc` (and the count of unread words).
    Windows are batched by length so padding stays small; each window's logits keep its own positions only."""
    import torch

    ids = enc.features["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(ids)
    model = model.to(device).eval()
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(ids[w]) for w in batch)
        feats = {k: torch.tensor([v[w] + [0] * (width - len(v[w])) for w in batch], device=device)
                 for k, v in enc.features.items()}
        with torch.inference_mode():
            logits = model(**feats).logits.float().cpu().numpy()
        for row, w in enumerate(batch):
            out[w] = logits[row, :len(ids[w])]
    return word_logits(out, enc)
