"""The distillation teacher: the fine-tuned model, blended with the TF-IDF baseline where validation rows say so.

A fine-tuned model can sit below the baseline the pipeline already trains: an English tokenizer on German text
(Bundestag speeches: teacher 0.104 vs baseline 0.300 test macro-F1). Distilling from an ensemble is where
distillation started (Hinton et al., 2015), so with `distill.blend_baseline` set the student's targets are

    log p = (1 - w) * log softmax(teacher logits) + w * log p_baseline      (then softmax / temperature)

a weighted geometric mean of the two distributions, with the baseline's weight w chosen on validation rows: the
w of a grid with the lowest mean log-loss, adopted only when its per-row log-loss gain over the teacher alone has
a one-sided paired-bootstrap lower bound above 0 (a few hundred validation rows are noisy; without that evidence
w = 0 and the targets are the teacher's own logits, byte for byte).

On training rows the baseline's probabilities are out-of-fold (k refits on the other folds): a baseline scoring
the rows it was fitted on is near one-hot, so it would pass on the labels instead of what it learned.

Off by default (weight 0); the evidence for that default is bench/results/BLEND.md.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from pipeline.core.metrics import label_index, log_softmax, macro_f1_fn

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the baseline's weight
EPS = 1e-7  # floor of a probability before its log: a class a fold's baseline never saw is unlikely, not impossible


def blend(teacher_logits: np.ndarray, baseline_prob: np.ndarray, weight: float) -> np.ndarray:
    """The blended targets as logits (normalised log-probabilities); weight 0 returns the teacher's logits as they
    are, so a blend the validation rows did not adopt changes nothing downstream."""
    if weight == 0:
        return np.asarray(teacher_logits, dtype=np.float32)
    mixed = (1 - weight) * log_softmax(teacher_logits) + weight * np.log(np.clip(baseline_prob, EPS, 1.0))
    return log_softmax(mixed).astype(np.float32)


def row_log_loss(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -log_softmax(logits)[np.arange(len(y)), np.asarray(y)]


def choose_weight(teacher_logits: np.ndarray, baseline_prob: np.ndarray, y: np.ndarray, confidence: float,
                  n_resamples: int = 2000, seed: int = 0, weights: tuple[float, ...] = WEIGHTS) -> dict:
    """The baseline's weight from validation rows: the lowest mean log-loss over `weights`, kept only when the
    per-row gain over the teacher alone is positive beyond noise (one-sided bootstrap lower bound at
    `confidence`); otherwise 0. Every weight's validation log-loss and macro-F1 is in the record."""
    y = np.asarray(y)
    f1 = macro_f1_fn(teacher_logits.shape[1])
    losses = {w: row_log_loss(blend(teacher_logits, baseline_prob, w), y) for w in weights}
    table = [{"baseline_weight": w, "val_log_loss": round(float(losses[w].mean()), 5),
              "val_macro_f1": round(f1(y, blend(teacher_logits, baseline_prob, w).argmax(1)), 4)} for w in weights]
    best = min(weights, key=lambda w: (round(float(losses[w].mean()), 9), w))  # float noise is a tie
    gain = losses[0.0] - losses[best]
    rng = np.random.default_rng(seed)
    means = np.array([gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(n_resamples)])
    lower = float(np.quantile(means, 1 - confidence)) if best else 0.0
    adopted = bool(best and lower > 0)
    return {"baseline_weight": best if adopted else 0.0, "best_on_validation": best, "adopted": adopted,
            "val_rows": int(len(y)), "log_loss_gain": round(float(gain.mean()), 5),
            "log_loss_gain_lower": round(lower, 5), "confidence": confidence, "grid": table}


def out_of_fold_proba(make_model: Callable[[], Any], texts: list[str], labels: list[str], label_names: list[str],
                      folds: int, seed: int) -> np.ndarray:
    """Each row's class probabilities from a model fitted without its fold (stratified, seeded), in
    `label_names`' column order; a class missing from a fold's training part gets probability EPS there."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    smallest = min(np.unique(y, return_counts=True)[1])
    k = max(2, min(folds, int(smallest))) if smallest >= 2 else folds
    out = np.full((len(y), len(label_names)), EPS)
    col = label_index(label_names)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    text_arr = np.asarray(texts, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has N members": handled below
        parts = list(splitter.split(text_arr, y))
    for fit_idx, pred_idx in parts:
        seen = np.unique(y[fit_idx])
        if len(seen) < 2:  # a fold left with one class (a class of one or two rows): that class is all it knows
            out[pred_idx, col[seen[0]]] = 1.0
            continue
        model = make_model().fit(text_arr[fit_idx], y[fit_idx])
        out[np.ix_(pred_idx, [col[c] for c in model.classes_])] = model.predict_proba(text_arr[pred_idx])
    return out / out.sum(1, keepdims=True)
