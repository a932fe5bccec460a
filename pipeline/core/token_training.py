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

from pipeline.core.entities import PRIMARY, entity_counts, entity_f1
from pipeline.core.metrics import label_index
from pipeline.core.progress import Eta
from pipeline.core.token_encoding import Encoded, encode_words, predicted_tags, word_logits
from pipeline.core.trainers import ResumableTrainer

__all__ = ["PRIMARY", "EvalInOrder", "TokenTrainer", "collator", "encode_frame", "metrics_fn", "predict_word_logits",
           "window_dataset"]


class EvalInOrder:
    """A Trainer mixin: validation windows scored in their own order. Under group_by_length transformers also
    length-groups evaluation batches, which a text classifier never notices (its labels travel with its
    predictions) but which would hand the entity metric its windows out of order: every word read from the wrong
    window."""

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        return SequentialSampler(eval_dataset)


class TokenTrainer(EvalInOrder, ResumableTrainer):
    """The Trainer for token classification: ResumableTrainer's training, validation in order."""


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
    # parquet hands list columns back as arrays
    tags = [list(t) for t in frame["tags"]] if with_labels else None
    return encode_words([list(t) for t in frame["tokens"]], tokenizer, max_length, stride, tags,
                        label_index(label_names) if with_labels else None)


def collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


class KDCollator:
    """DataCollatorForTokenClassification, and the student's per-position targets (`teacher_logits`, [positions,
    labels] per window) padded with zeros to the batch's width: padding and non-first sub-words carry label -100,
    which the distillation loss skips, so what they hold never counts."""

    def __init__(self, tokenizer: Any) -> None:
        self.base = collator(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        targets = [f.pop("teacher_logits") for f in features] if "teacher_logits" in features[0] else None
        batch = self.base(features)
        if targets is not None:
            width, n = batch["input_ids"].shape[1], len(targets[0][0])
            out = torch.zeros((len(targets), width, n), dtype=torch.float32)
            for i, t in enumerate(targets):
                out[i, :len(t)] = torch.as_tensor(t, dtype=torch.float32)
            batch["teacher_logits"] = out
        return batch


def per_window(per_sentence: list, enc: Encoded) -> list[list[list[float]]]:
    """Values per sentence and word ([words, k]) -> per window and position ([positions, k]): each word's row at
    its first sub-word, zeros elsewhere."""
    out = []
    for w, row in enumerate(enc.starts):
        values = per_sentence[enc.sentence[w]]
        k = len(values[0]) if len(values) else 0
        out.append([list(values[i]) if i >= 0 else [0.0] * k for i in row])
    return out


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


def padded_batches(enc: Encoded, batch_size: int):
    """(window indices, {input: int64 [batch, width]}) over `enc`'s windows, batched by length so padding stays
    small; every model reads the same batches (torch here, ONNX in token_scoring)."""
    ids = enc.features["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(ids[w]) for w in batch)
        yield batch, {k: np.array([v[w] + [0] * (width - len(v[w])) for w in batch], dtype=np.int64)
                      for k, v in enc.features.items()}


def run_windows(forward: Any, enc: Encoded, batch_size: int) -> tuple[list, int]:
    """`forward({input: array}) -> [batch, width, labels]` over every window -> per sentence [words, labels]
    logits (and the count of unread words); each window keeps its own positions only."""
    ids = enc.features["input_ids"]
    out: list[np.ndarray] = [np.empty(0)] * len(ids)
    eta = Eta("scoring", len(ids), unit="windows")
    for batch, feats in padded_batches(enc, batch_size):
        logits = forward(feats)
        for row, w in enumerate(batch):
            out[w] = logits[row, :len(ids[w])]
        eta.update(len(batch))
    return word_logits(out, enc)


def predict_word_logits(model: Any, enc: Encoded, batch_size: int = 32, device: str = "cpu") -> tuple[list, int]:
    """Per sentence [words, labels] logits from a torch token classifier over windows `enc`."""
    import torch

    model = model.to(device).eval()

    def forward(feats: dict) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v).to(device) for k, v in feats.items()}).logits.float().cpu().numpy()

    return run_windows(forward, enc, batch_size)
