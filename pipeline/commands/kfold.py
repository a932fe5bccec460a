"""kfold: settle a small set's comparisons on k disjoint test folds instead of one ~10% test split.

    finetune kfold --folds 3                      # 3 folds as DVC experiments (the workspace's first), pooled
    finetune kfold --pool f0.parquet f1.parquet   # pool test predictions of runs made elsewhere

On a few hundred test rows the CI of "teacher minus baseline" is wide, and a class with 2 test rows can decide it.
`split.fold: f` moves the hash split's test slice, so folds 0..k-1 test disjoint rows; each fold is a whole
`dvc exp run -S split.fold=f` (its own teacher, student and baseline, trained on the other rows), so every fold is
in `dvc exp show`. Their test predictions (data/eval/test_predictions.parquet) are pooled: each row is predicted
once, by models that never saw it (cross-validated predictions), and the paired comparisons evaluate makes are
made again over k times as many rows. The bootstrap resamples the pooled rows with the models held fixed: it
measures the test sample's noise, not how much retraining on other rows would move a model (the per-fold figures
show that). Nothing is adopted: the workspace is put back as it was (`dvc exp apply` of its own fold, run first),
and the result is metrics/kfold.json and the lines printed.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import DataError, KnownError, read_table, setup_logging, write_json
from pipeline.core.metrics import prediction_labels
from pipeline.core.names import BLEND, BLEND_PAIRS, PAIRS, STUDENTS
from pipeline.core.project import run_dvc, workspace

log = logging.getLogger(__name__)

FOLD_DIR = Path("data/kfold")
MAX_REPEATED = 0.05  # a fold whose test rows are more than this share another fold's is not a fold of the same seed


def load_folds(paths: list[Path]) -> tuple[list[pd.DataFrame], list[str]]:
    """Each file's (model, id, label, prediction) rows, and the label set of the models, in their order, from the
    probability columns evaluate writes (p_<label>); every fold's models must have the same one."""
    frames, label_sets = [], []
    for p in paths:
        df = read_table(p, columns=["model", "id", "label", "prediction"])
        label_sets.append(prediction_labels(df))
        if label_sets[-1] != label_sets[0]:
            raise DataError(f"{p}: its models' labels {label_sets[-1]} differ from {paths[0]}'s {label_sets[0]}")
        frames.append(df[["model", "id", "label", "prediction"]].assign(fold=str(p)))
    return frames, label_sets[0] if label_sets else []


def disjoint(frames: list[pd.DataFrame], model: str) -> tuple[list[pd.DataFrame], dict[str, int]]:
    """The folds' frames with each test row kept once (by the first fold that tested it), and how many rows each
    later fold repeated; an error when folds overlap by more than a few rows of tiny classes."""
    seen: dict[str, str] = {}
    repeated: dict[str, int] = {}
    kept = []
    for f in frames:
        name, ids = f["fold"].iat[0], f.loc[f["model"] == model, "id"]
        if ids.duplicated().any():
            raise DataError(f"{name}: row {ids[ids.duplicated()].iat[0]} is predicted twice by one model")
        again = ids[ids.isin(seen)]
        if len(again) > MAX_REPEATED * len(ids):
            raise DataError(f"kfold: {len(again)} of {name}'s {len(ids)} test rows are test rows of "
                            f"{seen[again.iat[0]]} too (row {again.iat[0]}): not disjoint folds of one seed "
                            "(split.fold 0..k-1), or the same fold twice")
        if len(again):
            # A class of a handful of rows has fewer disjoint test rows than there are folds: its repeated rows
            # are scored once, by the first fold that tested them (its models never saw them either), counted.
            repeated[name] = int(len(again))
            f = f[~f["id"].isin(set(again))]
        seen.update(dict.fromkeys(ids, name))
        kept.append(f)
    return kept, repeated


def pool(frames: list[pd.DataFrame], names: list[str], n_resamples: int = 1000, confidence: float = 0.95,
         seed: int = 0) -> dict:
    """Pooled paired comparisons over the test rows of every fold: each fold's frame holds one prediction per
    (model, test row), as evaluate writes it. Folds must score the same models and test disjoint rows, up to a
    few rows of tiny classes (scored once, counted in `repeated_rows`)."""
    from pipeline.core.metrics import label_index, macro_f1_fn, unseen_labels
    from pipeline.core.stats import bootstrap_ci, metric_ci, paired_comparison

    if len(frames) < 2:
        raise DataError("kfold: at least two folds to pool")
    models = [sorted(f["model"].unique()) for f in frames]
    if any(m != models[0] for m in models):
        where = {f["fold"].iat[0]: m for f, m in zip(frames, models)}
        raise DataError(f"kfold: the folds score different models: {where}")
    frames, repeated = disjoint(frames, models[0][0])
    df = pd.concat(frames, ignore_index=True)
    if not names:  # no per-class probabilities: entities per sentence (the token task), pooled by entity F1
        return pool_entities(df, frames, models[0], repeated, n_resamples, confidence, seed)
    unknown = unseen_labels(set(df["prediction"].astype(str)) | set(df["label"].astype(str)), names)
    if unknown:
        raise DataError(f"kfold: labels or predictions outside the models' labels {names}: {unknown}")
    index = label_index(names)
    df["order"] = df["fold"].map({f["fold"].iat[0]: k for k, f in enumerate(frames)})  # folds as given
    wide = {m: g.sort_values(["order", "id"], kind="stable") for m, g in df.groupby("model")}
    ref = wide[models[0][0]][["fold", "id"]].to_numpy()
    if any(not np.array_equal(g[["fold", "id"]].to_numpy(), ref) for g in wide.values()):
        raise DataError("kfold: within a fold, every model must score the same test rows")
    y = wide[models[0][0]]["label"].astype(str).map(index).to_numpy()
    pred = {m: g["prediction"].astype(str).map(index).to_numpy() for m, g in wide.items()}
    fold_of = wide[models[0][0]]["fold"].to_numpy()
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    # Macro-F1 over the classes the rows hold, as evaluate's is (every class has a test row there). A fold can lack
    # a tiny class whose one row an earlier fold scored; counting that class as F1 0 would sink the fold's figure.
    metric = macro_f1_fn(len(names), classes=np.unique(y))
    per_fold = []
    for fo in dict.fromkeys(fold_of):
        at = fold_of == fo
        of_fold = macro_f1_fn(len(names), classes=np.unique(y[at]))
        per_fold.append({"fold": fo, "rows": int(at.sum()),
                         "macro_f1": {m: round(of_fold(y[at], p[at]), 4) for m, p in pred.items()}})
    pairs = [(a, b) for a, b in PAIRS + (BLEND_PAIRS if BLEND in pred else ()) if a in pred and b in pred]
    comparisons = {f"{a}_vs_{b}": paired_comparison(y, pred[a], pred[b], metric, name_a=a, name_b=b, **boot)
                   for a, b in pairs}
    out = {"folds": len(frames), "rows": int(len(y)), "classes": len(names), "repeated_rows": repeated,
           "smallest_class_rows": int(np.bincount(y, minlength=len(names)).min()),
           "models": {m: metric_ci(y, p, metric, **boot) for m, p in pred.items()},
           "per_fold": per_fold, "comparisons": comparisons,
           "note": "pooled test predictions of models that never saw the rows they scored; the CIs resample the "
                   "pooled rows (test-sample noise), the per-fold figures show how much the models move"}
    for student in STUDENTS:
        if student in pred and "teacher" in pred:
            s, t = pred[student], pred["teacher"]
            low, high = bootstrap_ci((y, s, t), lambda yy, a, b: metric(yy, a) / max(metric(yy, b), 1e-12),
                                   n_resamples, confidence, seed)
            out[f"{student}_keeps"] = {"value": round(metric(y, s) / max(metric(y, t), 1e-12), 4),
                                       "ci_low": round(low, 4), "ci_high": round(high, 4)}
    return out


def pool_entities(df: pd.DataFrame, frames: list[pd.DataFrame], models: list[str], repeated: dict, n_resamples: int,
                  confidence: float, seed: int) -> dict:
    """pool() for a token model's predictions (`label` and `prediction` hold each sentence's entities): entity F1
    with CIs over the pooled sentences, paired differences, per fold, and what each student keeps."""
    from pipeline.core.entities import counts_from_text, entity_f1, entity_f1_ci, paired_entity_f1

    df = df.assign(order=df["fold"].map({f["fold"].iat[0]: k for k, f in enumerate(frames)}))
    wide = {m: g.sort_values(["order", "id"], kind="stable") for m, g in df.groupby("model")}
    ref = wide[models[0]][["fold", "id"]].to_numpy()
    if any(not np.array_equal(g[["fold", "id"]].to_numpy(), ref) for g in wide.values()):
        raise DataError("kfold: within a fold, every model must score the same test rows")
    counts = {m: counts_from_text(g["label"].tolist(), g["prediction"].tolist()) for m, g in wide.items()}
    types = sorted({t for c in counts.values() for t in c.types})
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    fold_of = wide[models[0]]["fold"].to_numpy()
    comparisons = {}
    for a, b in PAIRS:
        if a in counts and b in counts:
            c = paired_entity_f1(counts[a], counts[b], **boot)
            how = ("above" if c["delta"] > 0 else "below") if c["significant"] else "cannot be told from"
            comparisons[f"{a}_vs_{b}"] = {**c, "verdict": f"{a} {how} {b}: entity F1 {c['delta']:+.4f} "
                                                       f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"}
    out = {"metric": "entity F1", "folds": len(frames), "rows": int(len(ref)), "classes": len(types),
           "repeated_rows": repeated, "smallest_class_rows": int(min(c.gold.sum(0).min() for c in counts.values())),
           "models": {m: entity_f1_ci(c, **boot) for m, c in counts.items()},
           "per_fold": [{"fold": fo, "rows": int((fold_of == fo).sum()),
                         "macro_f1": {m: round(float(entity_f1(c.take(np.flatnonzero(fold_of == fo)))), 4)
                                      for m, c in counts.items()}} for fo in dict.fromkeys(fold_of)],
           "comparisons": comparisons}
    for student in STUDENTS:
        if student in counts and "teacher" in counts:
            t = entity_f1(counts["teacher"])
            out[f"{student}_keeps"] = {"value": round(float(entity_f1(counts[student]) / max(t, 1e-12)), 4),
                                       "ci_low": None, "ci_high": None}
    return out


def run_folds(root: Path, folds: int) -> list[Path]:
    """The workspace's fold and k-1 others as DVC experiments; each fold's test predictions kept in data/kfold/;
    the workspace is put back as it was afterwards."""
    from pipeline.core.params import load_params

    params = load_params(root / "params.yaml")
    if params.split.method != "hash":
        raise KnownError("kfold: split.method must be hash (folds rotate the hash split)")
    if not 2 <= folds <= params.split.folds:
        raise KnownError(f"kfold: --folds must be 2..{params.split.folds} at split.test {params.split.test:g}")
    predictions = workspace(root).path("evaluate", "predictions")
    study = time.strftime("%Y%m%d%H%M%S")
    out_dir = root / FOLD_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    # The workspace's own fold runs first, as it is (no -S: DVC rewrites params.yaml when it sets a key), so
    # applying it at the end puts params.yaml back byte for byte.
    first = params.split.fold
    order = [first] + [f for f in range(params.split.folds) if f != first][:folds - 1]
    paths = []
    for n, f in enumerate(order):
        name = f"kfold-{study}-{f}"
        t0 = time.time()
        log.info("fold %d (%d of %d): dvc exp run --name %s%s", f, n + 1, folds, name,
                 "" if f == first else f" -S split.fold={f}")
        run_dvc("exp", "run", "--name", name, *(() if f == first else ("-S", f"split.fold={f}")), cwd=root)
        dest = out_dir / f"{name}.parquet"
        shutil.copyfile(root / predictions, dest)
        log.info("fold %d done in %.0f s", f, time.time() - t0)
        paths.append(dest)
    run_dvc("exp", "apply", f"kfold-{study}-{first}", cwd=root)
    return paths


def summary(result: dict) -> str:
    again = sum(result["repeated_rows"].values())
    lines = [f"{result['folds']} folds, {result['rows']} test rows pooled ({result['classes']} classes, the "
             f"smallest with {result['smallest_class_rows']} rows)"
             + (f"; {again} rows of tiny classes tested by two folds, scored once (the first fold's)" if again
                else "")]
    metric = result.get("metric", "macro-F1")
    lines += [f"{m}: {metric} {v['value']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
              for m, v in result["models"].items()]
    lines += [c["verdict"] for c in result["comparisons"].values()]
    for key in ("student_keeps", "student_onnx_keeps"):
        if key in result:
            k = result[key]
            lines.append(f"{key.replace('_keeps', '')} keeps {k['value']:.1%} of the teacher's {metric}"
                         + (f" [{k['ci_low']:.1%}, {k['ci_high']:.1%}]" if k["ci_low"] is not None else ""))
    lines += [f"fold {f['fold']}: {f['rows']} rows, " + ", ".join(f"{m} {v:.4f}" for m, v in f["macro_f1"].items())
              for f in result["per_fold"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3, help="folds to run as experiments, the workspace's own included")
    ap.add_argument("--pool", nargs="+", type=Path, help="pool these test_predictions files instead of running")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--output", default="metrics/kfold.json")
    ap.add_argument("--root", default=".")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        if args.pool:
            paths = args.pool
        else:
            if not (root / "dvc.yaml").is_file():
                raise KnownError(f"{root}: no dvc.yaml; run kfold in the project folder, or pass --pool")
            paths = run_folds(root, args.folds)
        from pipeline.core.params import load_params

        seed = load_params(root / "params.yaml").seed if (root / "params.yaml").is_file() else 0
        result = pool(*load_folds(paths), n_resamples=args.resamples, confidence=args.confidence, seed=seed)
        result["sources"] = [str(p) for p in paths]
        write_json(result, root / args.output)
    except KnownError as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    sys.stdout.write(summary(result))


if __name__ == "__main__":
    main()
