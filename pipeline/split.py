"""split: data/interim/balanced.parquet -> data/processed/{train,val,test}.parquet (params: seed, split).

Stratified by label and grouped by `source_id`: all rows derived from one original row (its augmented variants
and oversampled copies) land in the same split, so no copy of a test row is ever trained on. Because every group
has one label, a stratified group split is exactly: per class, shuffle the groups and cut them 80/10/10 (largest
remainder rounding). scikit-learn's StratifiedGroupKFold only cuts into k equal folds, so it cannot do
arbitrary ratios; this is the one place we split by hand.

Validation and test keep only original rows, so models are judged on real text; the derived rows of their
groups are dropped and counted (`derived_row_in_eval_split`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.checks import allocate
from pipeline.io import (
    DataError,
    class_counts,
    drop_counts,
    read_table,
    run_stage,
    setup_logging,
    stage_args,
    write_json,
    write_table,
)
from pipeline.params import SplitParams, load_params

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    splits: dict[str, pd.DataFrame]
    dropped: pd.DataFrame


def split(df: pd.DataFrame, p: SplitParams, rng: np.random.Generator) -> SplitResult:
    labels_per_group = df.groupby("source_id")["label"].nunique()
    if (labels_per_group > 1).any():
        sid = labels_per_group.index[labels_per_group > 1][0]
        raise DataError(f"source_id {sid}: rows derived from one source carry different labels")
    group_label = df.groupby("source_id")["label"].first().sort_index()
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        groups = group_label.index[group_label == label].to_numpy()
        n_train, n_val, n_test = allocate(len(groups), (p.train, p.val, p.test))
        if n_val == 0 or n_test == 0:
            raise DataError(
                f"class {label!r} has only {len(groups)} original row(s): too few to put one in each of "
                f"train/val/test with split {p.train:g}/{p.val:g}/{p.test:g}"
            )
        groups = rng.permutation(groups)
        for name, part in zip(SPLITS, np.split(groups, [n_train, n_train + n_val])):
            assignment.update(dict.fromkeys(part, name))
    which = df["source_id"].map(assignment)
    is_original = df["origin"] == "original"
    out = {}
    dropped = df[which.ne("train") & ~is_original].assign(reason="derived_row_in_eval_split")
    for name in SPLITS:
        part = df[which.eq(name) & (is_original | (name == "train"))]
        # Sorted by id: the bytes written depend only on the content, not on upstream row order.
        out[name] = part.sort_values("id", kind="stable").reset_index(drop=True)
    return SplitResult(out, dropped.reset_index(drop=True))


def stage_metrics(df_in: pd.DataFrame, result: SplitResult) -> dict:
    return {
        "rows_in": len(df_in),
        "rows_out": sum(len(d) for d in result.splits.values()),
        **drop_counts(result.dropped),
        "per_split": {
            name: {"rows": len(d), "originals": int((d["origin"] == "original").sum()),
                   "per_class": class_counts(d["label"])}
            for name, d in result.splits.items()
        },
    }


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "train", "val", "test", "dropped", "metrics")
    params = load_params(args.params)
    df = read_table(args.input)
    result = split(df, params.split, np.random.default_rng(params.seed))
    metrics = stage_metrics(df, result)
    for name in SPLITS:
        write_table(result.splits[name], getattr(args, name))
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("split sizes: %s", {k: v["rows"] for k, v in metrics["per_split"].items()})


if __name__ == "__main__":
    run_stage(main)
