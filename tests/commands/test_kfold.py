"""finetune kfold's pooling: cross-validated test predictions of k folds, compared as evaluate compares one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from pipeline.commands.kfold import load_folds, pool
from pipeline.core.io import DataError

LABELS = ["a", "b", "c"]


def fold(path, ids, rng, teacher_err: float, baseline_err: float):
    """A test_predictions.parquet as evaluate writes it: one row per (model, test row), p_<label> columns."""
    y = rng.choice(LABELS, size=len(ids), p=[0.7, 0.25, 0.05])
    rows, preds = [], {}
    for model, err in (("teacher", teacher_err), ("baseline", baseline_err)):
        wrong = rng.random(len(ids)) < err
        preds[model] = np.where(wrong, rng.choice(LABELS, size=len(ids)), y)
    preds["student"] = preds["teacher"]
    for model, pred in preds.items():
        rows.append(pd.DataFrame({"model": model, "id": ids, "raw_row": 0, "label": y, "prediction": pred,
                                  "confidence": 0.9, **{f"p_{n}": 1 / 3 for n in LABELS}}))
    pd.concat(rows).to_parquet(path, index=False)
    return path


def test_pooled_rows_are_every_fold_and_figures_match_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    paths = [fold(tmp_path / f"f{k}.parquet", [f"r{k}-{i}" for i in range(150)], rng, 0.1, 0.2) for k in range(3)]
    frames, names = load_folds(paths)
    result = pool(frames, names, n_resamples=200)
    allrows = pd.concat(pd.read_parquet(p) for p in paths)
    for model in ("teacher", "baseline"):
        d = allrows[allrows["model"] == model]
        expected = f1_score(d["label"], d["prediction"], labels=LABELS, average="macro", zero_division=0)
        assert result["models"][model]["value"] == pytest.approx(expected, abs=1e-4)
    assert result["rows"] == 450 and result["folds"] == 3 and len(result["per_fold"]) == 3
    c = result["comparisons"]["teacher_vs_baseline"]
    assert c["rows"] == 450 and c["delta"] > 0 and c["ci_low"] <= c["delta"] <= c["ci_high"]
    keeps = result["student_keeps"]
    assert keeps["value"] == 1.0 and keeps["ci_low"] == keeps["ci_high"] == 1.0  # same predictions as the teacher


def test_more_folds_narrow_the_interval(tmp_path):
    """The point of pooling: the same kind of models on 3x the rows give a CI about 1/sqrt(3) as wide."""
    rng = np.random.default_rng(1)
    paths = [fold(tmp_path / f"f{k}.parquet", [f"r{k}-{i}" for i in range(200)], rng, 0.1, 0.15) for k in range(3)]
    one = pool(*load_folds(paths[:2]), n_resamples=300)["comparisons"]["teacher_vs_baseline"]
    three = pool(*load_folds(paths), n_resamples=300)["comparisons"]["teacher_vs_baseline"]
    assert three["ci_high"] - three["ci_low"] < one["ci_high"] - one["ci_low"]


def test_a_tiny_class_row_tested_twice_is_scored_once_and_counted_but_overlapping_folds_are_refused(tmp_path):
    """A class of a handful of rows has fewer disjoint test rows than folds: such a row is scored once (the first
    fold's) and counted. Folds that share more than a few rows are not folds of one seed: refused, by name."""
    rng = np.random.default_rng(2)
    a = fold(tmp_path / "a.parquet", [f"r{i}" for i in range(100)], rng, 0.1, 0.1)
    b = fold(tmp_path / "b.parquet", ["r99"] + [f"s{i}" for i in range(99)], rng, 0.1, 0.1)
    result = pool(*load_folds([a, b]))
    assert result["rows"] == 199 and result["repeated_rows"] == {str(b): 1}
    assert [f["rows"] for f in result["per_fold"]] == [100, 99]
    # A fold's figure is over the classes its rows hold, as evaluate's: here fold d's one row of class c is the
    # repeated one, and its perfect predictions of a and b score 1.0, not 2/3 (c counted as F1 0).
    perfect = pd.DataFrame({"model": "teacher", "id": [f"t{i}" for i in range(6)], "label": list("aabbcc")})
    perfect = perfect.assign(prediction=perfect["label"], **{f"p_{n}": 1 / 3 for n in LABELS})
    perfect.to_parquet(tmp_path / "c.parquet", index=False)
    more = perfect.iloc[[0, 2] * 20].assign(id=[f"u{i}" for i in range(40)])
    pd.concat([perfect.iloc[[5]], more]).to_parquet(tmp_path / "d.parquet", index=False)
    per_fold = pool(*load_folds([tmp_path / "c.parquet", tmp_path / "d.parquet"]))["per_fold"]
    assert [f["rows"] for f in per_fold] == [6, 40] and per_fold[1]["macro_f1"]["teacher"] == 1.0
    with pytest.raises(DataError, match=r"100 of .*a\.parquet's 100 test rows are test rows of .*a\.parquet"):
        pool(*load_folds([a, a]))


def test_folds_of_different_label_sets_or_models_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    a = fold(tmp_path / "a.parquet", ["r1", "r2"], rng, 0, 0)
    b = fold(tmp_path / "b.parquet", ["r3", "r4"], rng, 0, 0)
    d = pd.read_parquet(b)
    d.rename(columns={"p_c": "p_z"}).to_parquet(tmp_path / "c.parquet", index=False)
    with pytest.raises(DataError, match="c.parquet: its models' labels"):
        load_folds([a, tmp_path / "c.parquet"])
    d[d["model"] != "baseline"].to_parquet(tmp_path / "d.parquet", index=False)
    with pytest.raises(DataError, match="score different models"):
        pool(*load_folds([a, tmp_path / "d.parquet"]))
    with pytest.raises(DataError, match="no-such.parquet: file not found"):
        load_folds([tmp_path / "no-such.parquet"])
