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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.checks import allocate, splittable
from pipeline.core.io import (
    DataError,
    class_counts,
    drop_counts,
    read_table,
    run_stage,
    setup_logging,
    stable_id,
    stage_args,
    write_json,
    write_table,
)
from pipeline.core.params import SplitParams, load_params

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    splits: dict[str, pd.DataFrame]
    dropped: pd.DataFrame


def hash_unit(seed: int, source_id: str) -> float:
    """A uniform number in [0, 1) that depends on nothing but the seed and the row's id."""
    return int(stable_id(seed, "split", source_id), 16) / 16**16


def assign_hash(groups: np.ndarray, p: SplitParams, seed: int) -> dict[str, str]:
    # Fold f shifts every hash number by f test shares (mod 1): the test slice moves to the next one down, so
    # folds 0..k-1 have disjoint test rows; fold 0 is the plain split, byte for byte.
    plain = np.array([hash_unit(seed, g) for g in groups])
    u = (plain + p.fold * p.test) % 1.0
    names = np.where(u < p.train, "train", np.where(u < p.train + p.val, "val", "test"))
    if not all((names == n).any() for n in SPLITS):
        # A tiny class the hash left without val or test rows: cut it by rank of the same hash numbers instead,
        # one row at least in each split (deterministic; only classes of a handful of rows get here). Fold f
        # moves the cut f test-blocks down the ranks, as it moves the hash slice, so the folds' test rows of the
        # class differ while it has rows enough.
        n_val, n_test = max(1, round(len(groups) * p.val)), max(1, round(len(groups) * p.test))
        order = np.argsort(plain, kind="stable")
        names = np.empty(len(groups), dtype=object)
        names[order] = np.roll(["train"] * (len(groups) - n_val - n_test) + ["val"] * n_val + ["test"] * n_test,
                               -p.fold * n_test)
    return dict(zip(groups, names))


def assign_exact(groups: np.ndarray, p: SplitParams, rng: np.random.Generator) -> dict[str, str]:
    n_train, n_val, _ = allocate(len(groups), (p.train, p.val, p.test))
    groups = rng.permutation(groups)
    out: dict[str, str] = {}
    for name, part in zip(SPLITS, np.split(groups, [n_train, n_train + n_val])):
        out.update(dict.fromkeys(part, name))
    return out


def split(df: pd.DataFrame, p: SplitParams, seed: int) -> SplitResult:
    labels_per_group = df.groupby("source_id")["label"].nunique()
    if (labels_per_group > 1).any():
        sid = labels_per_group.index[labels_per_group > 1][0]
        raise DataError(f"source_id {sid}: rows derived from one source carry different labels")
    group_label = df.groupby("source_id")["label"].first().sort_index()
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        groups = group_label.index[group_label == label].to_numpy()
        if not splittable(len(groups), p):
            raise DataError(
                f"class {label!r} has only {len(groups)} original row(s): too few to put one in each of "
                f"train/val/test with split {p.train:g}/{p.val:g}/{p.test:g}"
            )
        assignment.update(assign_hash(groups, p, seed) if p.method == "hash" else assign_exact(groups, p, rng))
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
