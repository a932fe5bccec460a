"""The split's core: which of train/val/test each source group goes to (the split stage's docstring says the rules).

Apart from the stage so that a stage before it can ask where a row will land: the token task's mention replacement
draws its mentions from the sentences that will be trained on only, never from validation or test sentences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.checks import allocate, splittable
from pipeline.core.io import DataError, stable_id
from pipeline.core.params import SplitParams

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

