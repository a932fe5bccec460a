"""Cheap checks that must fail before any heavy work: a class too small to split, student layers the teacher
does not have. Each stage that can see the problem first calls them (clean and audit for class sizes, train for
the student's layers), so a run fails in seconds instead of after augmentation or a teacher's training."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.io import DataError
from pipeline.core.params import Params, ParamsError, SplitParams


def allocate(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split n items by ratios with largest-remainder rounding (sums to n exactly)."""
    raw = np.array(ratios) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def splittable(n: int, s: SplitParams) -> bool:
    """Can a class of n source rows have one in each of train/val/test? (hash: any 3; exact: by the counts.)"""
    if s.method == "hash":
        return n >= 3
    return min(allocate(n, (s.train, s.val, s.test))) > 0


def class_size_problems(labels: pd.Series, params: Params, where: str, dropped: pd.DataFrame | None = None
                        ) -> list[str]:
    """Every class without enough original rows for one in each of train/val/test (see `splittable`). With the
    rows a stage `dropped` (label, reason), a class that shrank says by how much and why: "only 1 row" about a
    347-row class sends a user to the wrong fix."""
    s = params.split
    out = []
    for label, n in sorted(labels.value_counts().items(), key=lambda kv: str(kv[0])):
        if splittable(int(n), s):
            continue
        msg = f"{where}: class {label!r} has only {n} row(s)"
        lost = dropped[dropped["label"] == label] if dropped is not None and len(dropped) else None
        if lost is not None and len(lost):
            reasons = ", ".join(f"{r} {c}" for r, c in lost["reason"].value_counts().items())
            msg += f" left of {n + len(lost)} (dropped: {reasons})"
        out.append(msg + f": too few to put one in each of train/val/test with split {s.method} "
                   f"{s.train:g}/{s.val:g}/{s.test:g}; add rows, merge the class, change the split"
                   + (", or keep the dropped rows (e.g. clean.max_chars for too_long)" if lost is not None
                      and len(lost) else ""))
    return out


def check_splittable(labels: pd.Series, params: Params, where: str) -> None:
    problems = class_size_problems(labels, params, where)
    if problems:
        raise DataError("\n  ".join(problems))


def student_layer_problems(params: Params, teacher_layers: int) -> list[str]:
    """Each student's `layers` (distill's own and every distill.try_first entry) against the teacher's layer count."""
    out = []
    for key, q in params.distill.students():
        if not q.student and max(q.layers) >= teacher_layers:
            out.append(f"{key}.layers: {q.layers} names layer {max(q.layers)}, but the teacher "
                       f"({params.train.model}) has {teacher_layers} layers (0..{teacher_layers - 1})")
    return out


def check_student_layers(params: Params, teacher_layers: int) -> None:
    """Checked when the teacher is built, not after training."""
    problems = student_layer_problems(params, teacher_layers)
    if problems:
        raise ParamsError("; ".join(problems) + "; fix it before the teacher trains for nothing")
