"""split: data/interim/balanced.parquet -> data/processed/{train,val,test}.parquet (params: seed, split).

Stratified by label and grouped by `source_id`: all rows derived from one original row (its augmented variants
and oversampled copies) land in the same split, so no copy of a test row is ever trained on. Because every group
has one label, a stratified group split is exactly: per class, shuffle the groups and cut them 80/10/10 (largest
remainder rounding). scikit-learn's StratifiedGroupKFold only cuts into k equal folds, so it cannot do
arbitrary ratios; this is the one place we split by hand.

`split.method: hash` (default) puts each group by a hash of (seed, source id) alone, as large production
pipelines do: appending or deleting rows moves no existing row between splits, so a metrics change after a data
change is not also a new test sample. The label is left out of the hash on purpose: fixing a row's label keeps it
in its split (a corrected test row stays a test row), so a relabel never changes the test sample either. Shares
are 80/10/10 up to sampling noise (reported per class in the metrics). A class the hash left without a val or
test row is cut by rank of the same hash numbers instead (only tiny classes get there; deterministic).
`method: exact` shuffles and cuts each class at exact counts (largest remainder):
exact shares, but one new row can move rows at every cut. `split.fold: f` (hash only) moves the test slice f
test-shares down the hash, so folds 0..k-1 (k = 1/test) test disjoint rows: k-fold evaluation of a small set by
running the folds as experiments (`finetune kfold`); fold 0 is the plain split.

Validation and test keep only original rows, so models are judged on real text; the derived rows of their
groups are dropped and counted (`derived_row_in_eval_split`).
"""
from __future__ import annotations

import logging

import pandas as pd

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
from pipeline.core.params import load_params
from pipeline.core.splitting import (  # noqa: F401 - the stage's names, as before the core moved
    SPLITS,
    SplitResult,
    assign_exact,
    assign_hash,
    hash_unit,
    split,
)

log = logging.getLogger(__name__)


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
        # Each class's originals: the share of them in each split (hash splits are 80/10/10 up to noise).
        "class_share": _class_shares(result),
    }


def _class_shares(result: SplitResult) -> dict[str, dict[str, float]]:
    counts = {name: d[d["origin"] == "original"]["label"].value_counts() for name, d in result.splits.items()}
    labels = sorted(set().union(*[set(c.index) for c in counts.values()]))
    out = {}
    for label in labels:
        total = sum(int(c.get(label, 0)) for c in counts.values())
        out[str(label)] = {name: round(int(c.get(label, 0)) / total, 4) for name, c in counts.items()}
    return out


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "train", "val", "test", "dropped", "metrics")
    params = load_params(args.params)
    df = read_table(args.input)
    result = split(df, params.split, params.seed)
    metrics = stage_metrics(df, result)
    for name in SPLITS:
        write_table(result.splits[name], getattr(args, name))
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("split sizes: %s", {k: v["rows"] for k, v in metrics["per_split"].items()})


if __name__ == "__main__":
    run_stage(main)
