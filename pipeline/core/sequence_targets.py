"""The sequence task's student targets: the teacher's logits for every training and validation text, blended with
the TF-IDF baseline's probabilities when `distill.blend_baseline` says so (auto: when the validation rows show a
log-loss gain beyond noise; pipeline/core/blend.py). With `inference.engine: ray` the teacher's batches run on a Ray
Data actor pool (pipeline/core/engine.py), byte-identical.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.blend import blend, choose_weight, out_of_fold_proba
from pipeline.core.engine import engine_for
from pipeline.core.io import read_lineage
from pipeline.core.metrics import encode_labels, macro_f1_fn, require_same_labels
from pipeline.core.modeling import (
    baseline_model,
    lineage_max_length,
    lineage_truncation,
    load_baseline,
    load_classifier,
    load_tokenizer,
    predict_logits,
)
from pipeline.core.scoring import open_model

log = logging.getLogger(__name__)
FOLDS = 5  # out-of-fold baseline probabilities for the training rows


def teacher_logits(teacher: str, parts: list[list[str]], params) -> np.ndarray:
    """The teacher's logits for each list of texts (scored separately, so a training row's logits do not depend on
    the validation rows batched with it), stacked; as many tokens read as the teacher was trained on (lineage)."""
    lineage = read_lineage(teacher)
    engine = engine_for(params.inference)
    if engine is None:
        model, tokenizer = load_classifier(teacher, "teacher"), load_tokenizer(teacher, "teacher")
        return np.concatenate([predict_logits(model, tokenizer, texts, params.train.eval_batch_size,
                                              lineage_max_length(lineage), truncation=lineage_truncation(lineage))
                               for texts in parts])
    try:  # the same batches on a Ray actor pool: byte-identical logits (pipeline/core/engine.py)
        scorer = open_model(teacher, engine=engine)
        return np.concatenate([scorer.logits(texts, params.train.eval_batch_size) for texts in parts])
    finally:
        engine.close()


def baseline_proba(model, texts: list[str], label_names: list[str]) -> np.ndarray:
    prob = model.predict_proba(texts)
    out = np.zeros((len(texts), len(label_names)))
    out[:, [label_names.index(c) for c in model.classes_]] = prob
    return out


def blend_targets(args, params, train_df: pd.DataFrame, val_df: pd.DataFrame, z: np.ndarray, n_train: int,
                  label_names: list[str]) -> tuple[np.ndarray, dict]:
    """The targets (teacher logits, or the blend) for train + val rows in that order, and the record of the choice."""
    setting = params.distill.blend_baseline
    folder = Path(args.baseline)
    base_lineage = read_lineage(folder)
    require_same_labels(folder, base_lineage.get("label_names", label_names), label_names)
    y_val = encode_labels(val_df["label"], label_names, args.val)
    val_prob = baseline_proba(load_baseline(folder), val_df["text"].tolist(), label_names)
    # What auto decides is worked out whatever the setting (validation rows only, seconds): with the blend off, the
    # record still says whether these rows would have taken the baseline in.
    record = choose_weight(z[n_train:], val_prob, y_val, params.distill.selection_confidence, seed=params.seed)
    record["auto_choice"] = record["baseline_weight"]
    if setting != "auto":
        record.update(baseline_weight=float(setting), adopted=None)
    record["setting"] = setting
    f1 = macro_f1_fn(len(label_names))
    record["val_macro_f1"] = {"teacher": round(f1(y_val, z[n_train:].argmax(1)), 4),
                              "baseline": round(f1(y_val, val_prob.argmax(1)), 4)}
    w = record["baseline_weight"]
    log.info("distill.blend_baseline %s -> baseline weight %.1f (auto: %.1f; best on validation %.1f, log-loss gain "
             "%.4f, lower bound %.4f)", setting, w, record["auto_choice"], record["best_on_validation"],
             record["log_loss_gain"], record["log_loss_gain_lower"])
    if w == 0:
        return z, record
    analyzer = base_lineage.get("resolved", {}).get("analyzer")
    oof = out_of_fold_proba(lambda: baseline_model(params.baseline, params.seed, analyzer),
                            train_df["text"].tolist(), train_df["label"].tolist(), label_names, FOLDS, params.seed)
    targets = np.concatenate([blend(z[:n_train], oof, w), blend(z[n_train:], val_prob, w)])
    record["val_macro_f1"]["blend"] = round(f1(y_val, targets[n_train:].argmax(1)), 4)
    record["train_baseline"] = f"out-of-fold, {FOLDS} folds"
    return targets, record



def student_targets(args, params, train_df: pd.DataFrame, val_df: pd.DataFrame) -> tuple[list, dict]:
    """Targets for the training rows then the validation rows (one array of logits each), and the blend record."""
    label_names = read_lineage(args.teacher)["label_names"]
    encode_labels(val_df["label"], label_names, args.val)  # an unknown label stops the stage before the teacher runs
    z = teacher_logits(args.teacher, [train_df["text"].tolist(), val_df["text"].tolist()], params)
    targets, record = blend_targets(args, params, train_df, val_df, z, len(train_df), label_names)
    return list(targets), record
