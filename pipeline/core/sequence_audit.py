"""The sequence task's audit (one label per text): likely mislabelled rows, found before augmentation copies them.

Finds likely mislabelled rows with confident learning (cleanlab's `find_label_issues`) on out-of-fold predicted
probabilities of a cheap model (hashed TF-IDF + logistic regression, stratified k-fold, folds on every core), before
any augmentation copies a wrong label. Every flagged row goes to `label_issues.parquet` (id, raw_row, text, given
label, suggested label, label quality, rank: most suspicious first); counts go to `metrics/data/audit.json`.
`audit.action: report` passes every row on unchanged; `drop` removes the flagged rows, each written to
`audit_dropped.parquet` with reason `label_issue`, so `rows_in == rows_out + dropped` still holds.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import class_counts, drop_counts
from pipeline.core.metrics import encode_labels
from pipeline.core.params import AuditParams

log = logging.getLogger(__name__)

ISSUE_COLUMNS = ["rank", "id", "raw_row", "text", "label", "suggested_label", "label_quality"]
PARALLEL_ROWS = 20_000  # below this, worker processes cost more than they save
# Hash space for the n-grams before the most frequent `features` are kept: 4M buckets, so the kept n-grams
# rarely share one. At 2^18 with every n-gram kept, a news corpus's uni+bigrams shared the buckets about three to
# one and the audit found injected label errors less precisely (the figures: bench/results/SCALE.md).
HASH_BUCKETS = 2**22


@dataclass
class AuditResult:
    rows: pd.DataFrame
    issues: pd.DataFrame  # ISSUE_COLUMNS, most suspicious first
    dropped: pd.DataFrame  # the rows removed (action: drop), with reason label_issue
    folds: int


def hashed_tfidf(texts: pd.Series, p: AuditParams, jobs: int) -> Any:
    """Rows x (at most) `p.features` TF-IDF of the most frequent word 1..ngram_max-grams (sublinear tf, l2 rows).

    As a vocabulary with max_features would, but hashed: no vocabulary is built, so memory does not grow with the
    distinct n-grams, and the hashing runs in chunks on `jobs` processes. The kept columns are the buckets with
    the highest total count (ties: lower bucket first); the IDF weights are fitted on every row, using no label."""
    import scipy.sparse as sp
    from joblib import Parallel, delayed
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    hv = HashingVectorizer(ngram_range=(1, p.ngram_max), n_features=HASH_BUCKETS, alternate_sign=False, norm=None)
    texts = texts.tolist()
    if jobs > 1 and len(texts) >= PARALLEL_ROWS:
        step = -(-len(texts) // (4 * jobs))
        parts = Parallel(n_jobs=jobs)(delayed(hv.transform)(texts[i:i + step]) for i in range(0, len(texts), step))
        counts = sp.vstack(parts).tocsr()
    else:
        counts = hv.transform(texts)
    total = np.asarray(counts.sum(axis=0)).ravel()
    used = np.flatnonzero(total)
    if len(used) > p.features:
        used = np.sort(used[np.argsort(-total[used], kind="stable")[:p.features]])
    counts = counts[:, used]
    return TfidfTransformer(sublinear_tf=True).fit_transform(counts)


def _fold(X: Any, y: np.ndarray, train: np.ndarray, test: np.ndarray, p: AuditParams, seed: int,
          n_classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    if p.max_train_rows and len(train) > p.max_train_rows:
        train = np.sort(np.random.default_rng(seed).choice(train, p.max_train_rows, replace=False))
    # tol 1e-3, not scikit-learn's 1e-4: with noisy labels (what the audit is for) saga crawled for hundreds of
    # epochs to 1e-4 with no change in accuracy (37 epochs, 7 s vs 100+ epochs on a fold of 50,000 health tweets
    # with 3% of the labels flipped); probabilities moved by at most 0.024 on clean data.
    model = LogisticRegression(C=p.C, class_weight="balanced", solver="saga", max_iter=p.max_iter, tol=1e-3,
                               random_state=seed).fit(X[train], y[train])
    out = np.zeros((len(test), n_classes))
    out[:, model.classes_] = model.predict_proba(X[test])  # a class absent from a sampled train set scores 0
    return out


def out_of_fold_probabilities(texts: pd.Series, y: np.ndarray, p: AuditParams, seed: int, folds: int) -> np.ndarray:
    """Each row's class probabilities from a model that never saw it (stratified k-fold, seeded): the same
    numbers whatever `p.jobs`, as each fold is fitted alone with its own seed."""
    import warnings

    from joblib import Parallel, delayed
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    jobs = p.jobs or os.cpu_count() or 1
    X = hashed_tfidf(texts, p, jobs)
    n_classes = int(y.max()) + 1
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds the cost; the fit is still used
        parts = Parallel(n_jobs=min(jobs, folds) if len(y) >= PARALLEL_ROWS else 1)(
            delayed(_fold)(X, y, train, test, p, seed + k, n_classes) for k, (train, test) in enumerate(splits))
    probs = np.zeros((len(y), n_classes))
    for (_, test), part in zip(splits, parts):
        probs[test] = part
    return probs


def audit(df: pd.DataFrame, p: AuditParams, seed: int) -> AuditResult:
    """Pure core: flag rows whose given label disagrees with what the rest of the data says about their text."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    df = df.reset_index(drop=True)
    no_drop = df.iloc[:0].assign(reason=pd.Series(dtype=object))
    label_names = sorted(df["label"].unique())
    smallest = int(df["label"].value_counts().min())
    folds = min(p.folds, smallest)
    if not p.enabled or folds < 2:
        if p.enabled:
            log.warning("audit skipped: the smallest class has %d row(s), too few for out-of-fold predictions",
                        smallest)
        return AuditResult(df, pd.DataFrame(columns=ISSUE_COLUMNS), no_drop, 0)
    y = encode_labels(df["label"], label_names, "audit")
    probs = out_of_fold_probabilities(df["text"], y, p, seed, folds)
    ranked = find_label_issues(y, probs, filter_by=p.filter_by, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(y, probs)
    issues = pd.DataFrame({
        "rank": np.arange(1, len(ranked) + 1),
        "id": df["id"].to_numpy()[ranked],
        "raw_row": df["raw_row"].to_numpy()[ranked] if "raw_row" in df else pd.NA,
        "text": df["text"].to_numpy()[ranked],
        "label": df["label"].to_numpy()[ranked],
        "suggested_label": [label_names[i] for i in probs[ranked].argmax(1)],
        "label_quality": quality[ranked].round(4),
    }, columns=ISSUE_COLUMNS)
    return audit_result(df, ranked, issues, p, folds)


def audit_result(df: pd.DataFrame, flagged_rows: Any, issues: pd.DataFrame, p: AuditParams, folds: int
                 ) -> AuditResult:
    """The rows passed on and dropped: all of them passed on under `report`; under `drop`, every flagged row is
    dropped with reason `label_issue`."""
    if p.action != "drop":
        return AuditResult(df, issues, df.iloc[:0].assign(reason=pd.Series(dtype=object)), folds)
    flagged = np.zeros(len(df), dtype=bool)
    flagged[np.asarray(flagged_rows, dtype=np.int64)] = True
    return AuditResult(df[~flagged].reset_index(drop=True), issues,
                       df[flagged].assign(reason="label_issue").reset_index(drop=True), folds)


def stage_metrics(df_in: pd.DataFrame, result: AuditResult, p: AuditParams) -> dict:
    return {
        "rows_in": len(df_in),
        "rows_out": len(result.rows),
        "action": p.action if p.enabled else "disabled",
        "folds": result.folds,
        "flagged": len(result.issues),
        "flagged_per_class": class_counts(result.issues["label"]),
        "flagged_share": round(len(result.issues) / max(1, len(df_in)), 4),
        **drop_counts(result.dropped),
        "per_class": class_counts(result.rows["label"]),
    }
