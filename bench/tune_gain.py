"""Does `finetune tune` pay? Its chosen teacher against the reference (the params as they were), on test rows.

    python -m bench.tune_gain --project bench/work/byo/<name> --trials 4

Runs `python -m pipeline.commands.tune --trials N` in the project (a folder where `dvc repro` has run), which decides on
validation rows only. Then, outside the decision, this bench restores the reference trial and the best trial in
turn (`dvc exp apply`), scores each teacher on the test rows and reports the paired difference with its CI, the
validation evidence and the minutes spent. The project is left at the reference. Writes bench/results/tune.json and
TUNE.md with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bench.common import OUT, measured, record, teacher_predictions


def test_predictions(project: Path) -> tuple:
    teacher = project / "data" / "models" / "teacher"
    names = json.loads((teacher / "lineage.json").read_text())["label_names"]
    test = pd.read_parquet(project / "data" / "processed" / "test.parquet")
    y = test["label"].map({n: i for i, n in enumerate(names)}).to_numpy()
    return y, teacher_predictions(teacher, test["text"].tolist()), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--name")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.stats import metric_ci, paired_comparison

    project = Path(args.project).resolve()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pipeline.commands.tune", "--trials", str(args.trials),
                    "--root", str(project)],
                   cwd=project, env=env, check=True)
    minutes = round((time.time() - t0) / 60, 1)
    tune = json.loads((project / "metrics" / "tune.json").read_text())
    preds = {}
    for role in ("best", "reference"):  # ends at the reference: the project is left as it was
        subprocess.run([sys.executable, "-m", "dvc", "exp", "apply", tune[role]], cwd=project, env=env, check=True)
        y, preds[role], names = test_predictions(project)
    metric = macro_f1_fn(len(names))
    row = {"trials": tune["trials"], "evidence": tune["evidence"], "adopted": tune["adopted"], "minutes": minutes,
           "test_reference": metric_ci(y, preds["reference"], metric, seed=0),
           "test_best": metric_ci(y, preds["best"], metric, seed=0),
           "test_best_vs_reference": paired_comparison(y, preds["best"], preds["reference"], metric,
                                                       name_a="best trial", name_b="reference", seed=0)}
    sys.stdout.write(record(Path(args.out), "tune", args.name or project.name, row, markdown))


def markdown(results: dict) -> str:
    lines = ["# Does tuning the teacher pay?", "",
             f"{measured(results['machine'])}, by `python -m bench.tune_gain --project <folder> --trials N`. "
             "`finetune tune` decides on validation rows only; the test columns are this bench's, after the "
             "decision.", "",
             "| dataset | trials (val macro-F1) | best − reference on validation [lower bound] | adopted | "
             "test: reference → best trial, difference [95% CI] | minutes |", "|---|---|---|---|---|---|"]
    for ds, r in results["datasets"].items():
        trials = "; ".join(f"{t['params'] or 'reference'}: {t['val_macro_f1']:.3f}" for t in r["trials"])
        ev, c = r["evidence"], r["test_best_vs_reference"]
        lines.append(f"| {ds} | {trials} | {ev['delta']:+.4f} [{ev['delta_lower']:+.4f}] ({ev['rows']} rows) | "
                     f"{'yes' if r['adopted'] else 'no'} | {r['test_reference']['value']:.4f} → "
                     f"{r['test_best']['value']:.4f}, {c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | "
                     f"{r['minutes']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
