"""audit: data/interim/clean.parquet -> data/interim/audited.parquet + label_issues.parquet (params: seed, audit).

Finds likely mislabelled rows with confident learning (cleanlab) on out-of-fold predicted probabilities of a cheap
model, before any augmentation copies a wrong label: the task says which model and which unit is judged (a text's
label: pipeline/core/sequence_audit.py; a word's tag: token_audit.py). Every flagged row goes to
`label_issues.parquet`, most suspicious first; counts go to `metrics/data/audit.json`. `audit.action: report` passes
every row on unchanged; `drop` removes the flagged rows (sentences), each written to `audit_dropped.parquet` with
reason `label_issue`, so `rows_in == rows_out + dropped` still holds.
"""
from __future__ import annotations

import logging
import time

from pipeline.core.checks import check_splittable
from pipeline.core.io import read_table, run_stage, setup_logging, stage_args, write_json, write_table
from pipeline.core.params import load_params
from pipeline.core.sequence_audit import (  # noqa: F401 - the sequence core, re-exported for its callers
    ISSUE_COLUMNS,
    AuditResult,
    audit,
    hashed_tfidf,
    out_of_fold_probabilities,
    stage_metrics,
)
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "issues", "dropped", "metrics", argv=argv)
    params = load_params(args.params)
    df = read_table(args.input)
    task = task_for(params)
    t0 = time.perf_counter()
    result = task.audit(df, params.audit, params.seed)
    check_splittable(result.rows["label"], params, f"{args.input} after audit.action: drop")
    metrics = task.audit_metrics(df, result, params.audit)
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
