"""k folds of one dataset, each a whole `bench/byo.py` run (`--set split.fold=f`), pooled as `finetune kfold` pools.

    python -m bench.kfold_runs --name healthtweets-imbalanced bench/work/byo/healthtweets-imbalanced \
        bench/work/byo/healthtweets-imbalanced-fold1 bench/work/byo/healthtweets-imbalanced-fold2

`finetune kfold` runs the folds as DVC experiments in one workspace; here each fold is a fresh clone that followed
the README's steps (so folds can run one after another across sessions, or on other machines), and the pooling is
the command's own (`pipeline.commands.kfold.pool`, as `finetune kfold --pool` does). Adds the dataset's entry to
bench/results/kfold.json and rewrites KFOLD.md with the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from bench.byo import commit_of
from bench.common import OUT, fmt_ci, fmt_diff, measured, record
from pipeline.commands.kfold import load_folds, pool
from pipeline.core.project import workspace


def fold_info(folder: Path) -> dict:
    repro = json.loads((folder / "repro.json").read_text())
    return {"folder": folder.name, "sets": repro.get("sets", []), "commit": commit_of(folder),
            "minutes": round(repro.get("seconds", 0) / 60)}


def markdown(results: dict) -> str:
    lines = ["# k-fold: one dataset's comparisons on disjoint test folds", "", measured(results["machine"]) + ".", "",
             "Written by `python -m bench.kfold_runs`. Each fold is a whole `bench/byo.py` run of the same raw file "
             "(a fresh clone, the README's steps, `dvc repro`) with `split.fold` set, so the folds test disjoint "
             "rows; their test predictions are pooled by `finetune kfold --pool`'s code. Macro-F1 with 95% "
             "bootstrap CIs over the pooled rows; differences paired (* = the CI excludes 0).", ""]
    for name, r in results["datasets"].items():
        p = r["pooled"]
        lines += [f"## {name}", "",
                  f"{p['folds']} folds, {p['rows']} test rows pooled, {p['classes']} classes (the smallest with "
                  f"{p['smallest_class_rows']} pooled test rows); {sum(p['repeated_rows'].values())} rows of tiny "
                  "classes tested by two folds, scored once (the first fold's).", "",
                  "| fold | run | test rows | " + " | ".join(p["models"]) + " |",
                  "|---|---|---|" + "---|" * len(p["models"])]
        for f, info in zip(p["per_fold"], r["runs"]):
            fold = next((x.split("=", 1)[1] for x in info["sets"] if x.startswith("split.fold=")), "0 (default)")
            lines.append(f"| {fold} | `{info['folder']}` at {info['commit']}, {info['minutes']} min | {f['rows']} | "
                         + " | ".join(f"{f['macro_f1'][m]:.3f}" for m in p["models"]) + " |")
        lines.append("| pooled | | " + f"{p['rows']} | " + " | ".join(fmt_ci(v) for v in p["models"].values())
                     + " |")
        lines += [""] + [f"- {k.replace('_vs_', ' − ')}: {fmt_diff(c)} (McNemar p {c['mcnemar']['p_value']:.3g})"
                         for k, c in p["comparisons"].items()]
        for key in ("student_keeps", "student_onnx_keeps"):
            if key in p:
                k = p[key]
                lines.append(f"- {key.replace('_keeps', '')} keeps {k['value']:.1%} of the teacher's macro-F1 "
                             f"[{k['ci_low']:.1%}, {k['ci_high']:.1%}]")
        lines += ["", r.get("note", ""), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="byo workspaces, one per fold, of the same raw file")
    ap.add_argument("--name", required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    seeds = {yaml.safe_load((f / "params.yaml").read_text())["seed"] for f in args.folders}
    if len(seeds) != 1:
        raise SystemExit(f"the folds use different seeds {seeds}: their test rows are not disjoint folds")
    pooled = pool(*load_folds([f / workspace(f).path("evaluate", "predictions") for f in args.folders]))
    row = {"runs": [fold_info(f) for f in args.folders], "pooled": pooled, "note": args.note}
    sys.stdout.write(record(OUT, "kfold", args.name, row, markdown))


if __name__ == "__main__":
    main()
