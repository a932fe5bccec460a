"""audit: data/interim/clean.parquet -> data/interim/audited.parquet + label_issues.parquet (params: seed, audit).

Finds likely mislabelled rows with confident learning (cleanlab's `find_label_issues`) on out-of-fold predicted
probabilities of a cheap model (TF-IDF + logistic regression, stratified k-fold `cross_val_predict`), before any
augmentation copies a wrong label. Every flagged row goes to `label_issues.parquet` (id, raw_row, text, given
label, suggested label, label quality, rank: most suspicious first); counts go to `metrics/data/audit.json`.
`audit.action: report` passes every row on unchanged; `drop` removes the flagged rows, each written to
`audit_dropped.parquet` with reason `label_issue`, so `rows_in == rows_out + dropped` still holds.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.checks import check_splittable
from pipeline.core.io import (
    class_counts,
    drop_counts,
    read_table,
    run_stage,
    setup_logging,
    stage_args,
    write_json,
    write_table,
)
from pipeline.core.modeling import tfidf_logreg
from pipeline.core.params import AuditParams, load_params

log = logging.getLogger(__name__)

ISSUE_COLUMNS = ["rank", "id", "raw_row", "text", "label", "suggested_label", "label_quality"]


@dataclass
class AuditResult:
    rows: pd.DataFrame
    issues: pd.DataFrame  # ISSUE_COLUMNS, most suspicious first
    dropped: pd.DataFrame  # the rows removed (action: drop), with reason label_issue
    folds: int


def out_of_fold_probabilities(texts: pd.Series, y: np.ndarray, p: AuditParams, seed: int, folds: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = tfidf_logreg("word", p.ngram_max, 1, 100_000, True, p.C, "balanced", p.max_iter, seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, texts, y, cv=cv, method="predict_proba")


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
    to_id = {n: i for i, n in enumerate(label_names)}
    y = df["label"].map(to_id).to_numpy()
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
    if p.action == "drop":
        flagged = np.zeros(len(df), dtype=bool)
        flagged[ranked] = True
        return AuditResult(df[~flagged].reset_index(drop=True), issues,
                           df[flagged].assign(reason="label_issue").reset_index(drop=True), folds)
    return AuditResult(df, issues, no_drop, folds)


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


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "issues", "dropped", "metrics", argv=argv)
    params = load_params(args.params)
    df = read_table(args.input)
    t0 = time.perf_counter()
    result = audit(df, params.audit, params.seed)
    check_splittable(result.rows["label"], params, f"{args.input} after audit.action: drop")
    metrics = stage_metrics(df, result, params.audit)
    write_table(result.rows, args.output)
    write_table(result.issues, args.issues)
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("audit (%s): %d of %d rows flagged as likely label errors %s in %.1f s; %d dropped",
             metrics["action"], metrics["flagged"], len(df), metrics["flagged_per_class"],
             time.perf_counter() - t0, metrics["dropped_total"])
    for _, r in result.issues.head(10).iterrows():
        log.info("  #%d %s -> %s (quality %.3f): %s", r["rank"], r["label"], r["suggested_label"],
                 r["label_quality"], r["text"][:100])


if __name__ == "__main__":
    run_stage(main)
