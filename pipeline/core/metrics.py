"""The one definition of each score a model gets: per-class and macro F1, accuracy, softmax; and the label map.

Every stage, command and bench script computes these here, so `metrics/eval.json`, `lineage diff`, `kfold`,
`tune` and the student search agree on the same rows. A macro-F1 always names its label set: all the model's
classes (what eval.json reports: a class absent from the rows and never predicted scores 0, as sklearn's
`f1_score(labels=range(n), average="macro", zero_division=0)`), or a chosen subset (`classes`, e.g. the classes a
slice holds). Computed from confusion counts with numpy: the bootstrap calls it thousands of times, where
sklearn's input validation would dominate; tests/core/test_metrics.py checks it against sklearn, bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pipeline.core.io import DataError

Metric = Callable[[np.ndarray, np.ndarray], float]


# ---------------------------------------------------------------------------------------------- labels
def label_index(label_names: Sequence[str]) -> dict[str, int]:
    """label -> class id, in the models' order (the order of `id2label`)."""
    return {n: i for i, n in enumerate(label_names)}


def label_config(label_names: Sequence[str]) -> dict[str, Any]:
    """The label map a transformers config carries (`from_pretrained(**label_config(names))`)."""
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": label_index(label_names)}


def prediction_labels(predictions: Any) -> list[str]:
    """The models' label set, in order, from a predictions table (evaluate writes a `p_<label>` column each)."""
    return [c[2:] for c in predictions.columns if c.startswith("p_")]


def unseen_labels(labels: Iterable[Any], label_names: Sequence[str]) -> list:
    return sorted(set(labels) - set(label_names))


def encode_labels(labels: Iterable[Any], label_names: Sequence[str], source: str, known_as: str = "") -> np.ndarray:
    """Class ids of `labels`; a label the models do not know stops the stage, naming the file it came from."""
    labels = list(labels)
    unseen = unseen_labels(labels, label_names)
    if unseen:
        raise DataError(f"{source}: label(s) {unseen} {known_as or f'never seen in training {list(label_names)}'}")
    index = label_index(label_names)
    return np.array([index[x] for x in labels], dtype=np.int64)


def require_same_labels(source: Any, labels: Sequence[str], label_names: Sequence[str], whose: str = "the teacher's"
                        ) -> None:
    """Two models compared or combined must share one label order."""
    if list(labels) != list(label_names):
        raise DataError(f"{source}: labels {list(labels)} differ from {whose} {list(label_names)}")


# ---------------------------------------------------------------------------------------------- scores
def class_counts(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, support, predicted) per class."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    tp = np.bincount(y[y == pred], minlength=n_classes)[:n_classes]
    return tp, np.bincount(y, minlength=n_classes)[:n_classes], np.bincount(pred, minlength=n_classes)[:n_classes]


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def class_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class 0..n-1 (0 where a class is neither present nor predicted)."""
    tp, support, predicted = class_counts(y, pred, n_classes)
    return _divide(2 * tp, support + predicted)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int, classes: Sequence[int] | np.ndarray | None = None
             ) -> float:
    """The mean F1 over `classes` (default: all n_classes). Each class's F1 counts every row: a row of another class
    predicted as one of them is its false positive, as sklearn's `labels=classes`."""
    f1 = class_f1(y, pred, n_classes)
    return float((f1 if classes is None else f1[np.asarray(classes, dtype=np.int64)]).mean())


def macro_f1_fn(n_classes: int, classes: Sequence[int] | np.ndarray | None = None) -> Metric:
    """`macro_f1` with its label set fixed: the form the bootstrap and paired comparisons take."""
    return lambda y, pred: macro_f1(y, pred, n_classes, classes)


def present_classes(*arrays: np.ndarray) -> np.ndarray:
    """The classes that occur in any of `arrays` (true labels, predictions): a slice's label set."""
    return np.unique(np.concatenate([np.asarray(a, dtype=np.int64) for a in arrays]))


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """accuracy, macro and weighted F1 over every class, and per-class precision/recall/F1/support."""
    n = len(label_names)
    tp, support, predicted = class_counts(y_true, y_pred, n)
    f1 = class_f1(y_true, y_pred, n)
    precision, recall = _divide(tp, predicted), _divide(tp, support)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, n),
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
    }


# ---------------------------------------------------------------------------------------------- probabilities
def log_softmax(logits: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Normalised log-probabilities, in float64 by default (the blend's logs); `dtype=None` keeps the logits'."""
    z = np.asarray(logits, dtype=dtype)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of `logits / temperature`, in the logits' own dtype."""
    z = logits / temperature if temperature != 1.0 else logits
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)
