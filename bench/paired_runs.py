"""Two whole runs of the same data, before and after a change: each model's test macro-F1, paired on the same rows.

    python -m bench.paired_runs --before bench/work/byo/bundestag-pre-floor --after bench/work/byo/bundestag \
        --change "early stopping not before min_steps" [--name bundestag]

Both folders are `bench/byo.py` workspaces of one raw file at the same seed, so clean, split and the test rows are
the same (checked: the test ids must match). Reads each run's `data/eval/test_predictions.parquet`, compares every
model present in both (after minus before) with evaluate's own paired bootstrap and McNemar test, and the
teacher-minus-baseline margin in each run. Adds the dataset's entry to bench/results/paired_runs.json and rewrites
PAIRED_RUNS.md with the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench.common import OUT, fmt_diff, measured, record
from pipeline.core.metrics import macro_f1_fn
from pipeline.core.stats import paired_comparison


def predictions(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "data" / "eval" / "test_predictions.parquet")


def compare(before: Path, after: Path) -> dict:
    a, b = predictions(after), predictions(before)
    models = [m for m in a["model"].unique() if m in set(b["model"])]
    ids = {m: (sorted(a.loc[a.model == m, "id"]), sorted(b.loc[b.model == m, "id"])) for m in models}
    if any(x != y for x, y in ids.values()):
        raise SystemExit(f"{before} and {after} do not share their test rows: not the same data and split")
    labels = sorted(set(a["label"]) | set(a["prediction"]) | set(b["prediction"]))
    code = {name: i for i, name in enumerate(labels)}
    metric = macro_f1_fn(len(labels))

    def aligned(df: pd.DataFrame, model: str) -> pd.DataFrame:
        return df[df.model == model].set_index("id").sort_index()

    out: dict = {"test_rows": len(ids[models[0]][0]), "models": {}, "teacher_minus_baseline": {}}
    for m in models:
        x, y = aligned(a, m), aligned(b, m)
        truth = x["label"].map(code).to_numpy()
        out["models"][m] = paired_comparison(truth, x["prediction"].map(code).to_numpy(),
                                             y["prediction"].map(code).to_numpy(), metric, name_a="after",
                                             name_b="before")
    for when, df in (("before", b), ("after", a)):
        if {"teacher", "baseline"} <= set(df["model"]):
            t, base = aligned(df, "teacher"), aligned(df, "baseline")
            out["teacher_minus_baseline"][when] = paired_comparison(
                t["label"].map(code).to_numpy(), t["prediction"].map(code).to_numpy(),
                base["prediction"].map(code).to_numpy(), metric, name_a="teacher", name_b="baseline")
    return out


def markdown(results: dict) -> str:
    lines = ["# Paired runs: the same data before and after a change", "", measured(results["machine"]) + ".", "",
             "Written by `python -m bench.paired_runs`. Each entry compares two whole `bench/byo.py` runs of one raw "
             "file (same seed, so the same test rows): test macro-F1 after minus before for each model, paired "
             "bootstrap 95% CI (* = excludes 0), and the teacher − baseline margin in each run.", ""]
    for name, r in results["datasets"].items():
        lines += [f"## {name}: {r['change']}", "",
                  f"`{r['before']}` → `{r['after']}`; {r['test_rows']} test rows.", "",
                  "| model | after − before |", "|---|---|"]
        lines += [f"| {m} | {fmt_diff(c)} |" for m, c in r["models"].items()]
        margins = r["teacher_minus_baseline"]
        lines += ["", "teacher − baseline: " + "; ".join(f"{w} {fmt_diff(c)}" for w, c in margins.items()), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--change", required=True)
    ap.add_argument("--name")
    args = ap.parse_args()
    row = {"change": args.change, "before": args.before.name, "after": args.after.name,
           **compare(args.before, args.after)}
    sys.stdout.write(record(OUT, "paired_runs", args.name or args.after.name, row, markdown))


if __name__ == "__main__":
    main()
