"""teacher_logits: teacher + baseline + data/processed/{train,val} -> data/distill/teacher_logits.parquet, blend record.

The student's targets for every training row (and the validation rows the student search judges against),
computed once and cached by DVC as their own output, so a sweep of distillation params
(`dvc exp run -S distill.alpha=0.7`) reruns only the student, never the teacher. The task computes them: a text's
logits, blended with the baseline's probabilities when `distill.blend_baseline` says so
(pipeline/core/sequence_targets.py), or each word's logits, read from its best window (token_task.py). The record of
that choice (each weight's validation log-loss and macro-F1) is the stage's metrics file.
"""
from __future__ import annotations

import logging

import pandas as pd

from pipeline.core.io import read_table, run_stage, setup_logging, stage_args, write_json, write_table
from pipeline.core.params import load_params
from pipeline.core.sequence_targets import FOLDS, baseline_proba, teacher_logits  # noqa: F401 - re-exported
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "teacher", "baseline", "train", "val", "output", "blend")
    params = load_params(args.params)
    train_df, val_df = read_table(args.train), read_table(args.val)
    targets, record = task_for(params).student_targets(args, params, train_df, val_df)
    # raw_row too: every table points at the raw line of its rows (lineage).
    rows = pd.concat([train_df[["id", "raw_row"]].assign(split="train"), val_df[["id", "raw_row"]].assign(split="val")],
                     ignore_index=True)
    # The weight in use travels with the targets: distill needs it for its lineage, and depending on the whole record
    # (which changes with any baseline param) would retrain the student when its targets have not changed.
    write_table(rows.assign(logits=targets, baseline_weight=float(record["baseline_weight"])), args.output)
    write_json(record, args.blend)
    log.info("student targets for %d training and %d validation rows (baseline weight %.1f)", len(train_df),
             len(val_df), record["baseline_weight"])


if __name__ == "__main__":
    run_stage(main)
