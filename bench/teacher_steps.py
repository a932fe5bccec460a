"""Small data: does training the teacher for a minimum number of optimiser steps pay, against the baseline?

    python -m bench.teacher_steps --project /path/to/project [--unseen more-rows.csv]

A project is a folder where `dvc repro` ran with `train.min_steps: 0` (3 epochs, the old default): its teacher is
the reference. Each variant trains the teacher again with the project's own params, split and seed, changing only
`train.min_steps` / `train.max_epochs` (variants that resolve to the same number of epochs are trained once), and is
scored on the same test rows (and, with --unseen, on more rows of the same source that the project never saw):
macro-F1 with its CI, the paired difference against the reference and against the TF-IDF baseline (refitted from
the project's train split with its params), validation macro-F1, the epochs run and the training time. Writes
bench/results/teacher_steps.json and TEACHER_STEPS.md with the machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from bench.common import OUT, ROOT, fmt_ci, fmt_diff, measured, record, teacher_predictions

VARIANTS = {
    "min_steps 300": {"min_steps": 300, "max_epochs": 10},
    "min_steps 600": {"min_steps": 600, "max_epochs": 10},
}


def train_variant(project: Path, work: Path, name: str, over: dict) -> tuple[Path, float]:
    out = work / name.replace(" ", "_")
    if (out / "teacher" / "lineage.json").is_file():
        return out / "teacher", json.loads((out / "seconds.json").read_text())["seconds"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(over)
    params.setdefault("distill", {}).update({k: v for k, v in over.items() if k in ("min_steps", "max_epochs")})
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.time()
    data = project / "data" / "processed"
    # Run from this checkout (its pipeline code), on the project's data.
    cmd = [sys.executable, "-m", "pipeline.stages.train", "--params", str(out / "params.yaml"),
           "--train", str(data / "train.parquet"), "--val", str(data / "val.parquet"),
           "--output", str(out / "teacher"), "--checkpoints", str(out / "ckpt"), "--live", str(out / "live")]
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = round(time.time() - t0, 1)
    (out / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return out / "teacher", seconds


def resolved_epochs(project: Path, over: dict) -> float:
    from pipeline.core.params import load_params
    from pipeline.core.profile import resolve_epochs

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(over)
    tmp = ROOT / "bench" / "work" / "teacher_steps" / "_params.yaml"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(yaml.safe_dump(params, sort_keys=False))
    rows = len(pd.read_parquet(project / "data" / "processed" / "train.parquet"))
    return resolve_epochs(load_params(str(tmp)).train, rows, "train", world_size=1)[0]


def unseen_rows(project: Path, path: str, names: list[str], n: int) -> pd.DataFrame:
    seen = set(pd.read_parquet(project / "data" / "interim" / "clean.parquet")["text"])
    for raw in (project / "data" / "raw").glob("*.csv"):  # the raw texts too (clean normalises them)
        seen |= set(pd.read_csv(raw)["text"].dropna())
    extra = pd.read_csv(path)
    extra = extra[extra["label"].isin(names) & ~extra["text"].isin(seen) & extra["text"].notna()]
    return extra.sample(n=min(n, len(extra)), random_state=0)[["text", "label"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--name")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--unseen")
    ap.add_argument("--unseen-rows", type=int, default=1000)
    args = ap.parse_args()
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.params import load_params
    from pipeline.core.stats import metric_ci, paired_comparison
    from pipeline.core.tasks import task_for

    project = Path(args.project).resolve()
    name = args.name or project.name
    work = ROOT / "bench" / "work" / "teacher_steps" / name
    data = project / "data" / "processed"
    train, val, test = (pd.read_parquet(data / f"{s}.parquet") for s in ("train", "val", "test"))
    ref = project / "data" / "models" / "teacher"
    ref_lineage = json.loads((ref / "lineage.json").read_text())
    names = ref_lineage["label_names"]
    teachers = {"3 epochs (min_steps 0)": (ref, ref_lineage.get("train_metrics", {}).get("train_runtime"),
                                           float(ref_lineage["params"]["epochs"]))}
    done: dict[float, str] = {teachers["3 epochs (min_steps 0)"][2]: "3 epochs (min_steps 0)"}
    for variant, over in VARIANTS.items():
        epochs = resolved_epochs(project, over)
        if epochs in done:
            print(f"{variant}: {epochs:g} epochs, as {done[epochs]}: not trained again", file=sys.stderr)
            continue
        done[epochs] = variant
        teachers[variant] = (*train_variant(project, work, variant, over), epochs)
    if args.unseen:
        test = pd.concat([test[["text", "label"]], unseen_rows(project, args.unseen, names, args.unseen_rows)],
                         ignore_index=True)
    to_id = {n: i for i, n in enumerate(names)}
    y, y_val = test["label"].map(to_id).to_numpy(), val["label"].map(to_id).to_numpy()
    metric = macro_f1_fn(len(names))
    bp = load_params(str(project / "params.yaml"))
    baseline, _ = task_for(bp).build_baseline(bp.baseline, bp.seed, train["text"].tolist())
    baseline.fit(train["text"], train["label"])
    base = test["text"].pipe(baseline.predict)
    base = pd.Series(base).map(to_id).to_numpy()
    preds, rows = {}, {}
    for variant, (folder, seconds, epochs) in teachers.items():
        lin = json.loads((folder / "lineage.json").read_text())
        preds[variant] = teacher_predictions(folder, test["text"].tolist())
        rows[variant] = {"epochs": epochs, "epochs_run": lin.get("train_metrics", {}).get("epoch"),
                         "val_macro_f1": metric(y_val, teacher_predictions(folder, val["text"].tolist())),
                         "macro_f1": metric_ci(y, preds[variant], metric, seed=0), "train_seconds": seconds,
                         "vs_baseline": paired_comparison(y, preds[variant], base, metric, name_a=variant,
                                                          name_b="baseline", seed=0)}
    first = next(iter(teachers))
    for variant in list(teachers)[1:]:
        rows[variant]["vs_reference"] = paired_comparison(y, preds[variant], preds[first], metric, name_a=variant,
                                                          name_b=first, seed=0)
    own = len(pd.read_parquet(data / "test.parquet"))
    row = {"test_rows": len(test), "train_rows": len(train), "val_rows": len(val), "variants": rows,
           "baseline": metric_ci(y, base, metric, seed=0),
           "unseen": f"{len(test) - own} rows of {Path(args.unseen).name} not in the project, with its {own} test "
                     "rows" if args.unseen else None}
    sys.stdout.write(record(Path(args.out), "teacher_steps", name, row, markdown))


def markdown(results: dict) -> str:
    lines = ["# Small data: a minimum number of optimiser steps for the teacher", "",
             f"{measured(results['machine'])}. Produced by `python -m bench.teacher_steps --project <folder>`; each "
             "variant is the teacher trained with the project's own params and split, changing only "
             "`train.min_steps`/`train.max_epochs` (early stopping on validation as always). * = the 95% CI of the "
             "paired difference excludes 0.", ""]
    for ds, r in results["datasets"].items():
        lines += [f"**{ds}** ({r['train_rows']} train, {r['val_rows']} validation, {r['test_rows']} test rows"
                  + (f": {r['unseen']}" if r.get("unseen") else "") + f"); baseline {fmt_ci(r['baseline'])}", "",
                  "| teacher | epochs (run) | val macro-F1 | test macro-F1 [95% CI] | vs baseline | vs 3 epochs "
                  "| train time (s) |", "|---|---|---|---|---|---|---|"]
        for variant, v in r["variants"].items():
            vs = v.get("vs_reference")
            lines.append(f"| {variant} | {v['epochs']:g} ({v['epochs_run']}) | {v['val_macro_f1']:.3f} | "
                         f"{fmt_ci(v['macro_f1'])} | {fmt_diff(v['vs_baseline'])} | "
                         f"{fmt_diff(vs) if vs else 'reference'} | {v['train_seconds'] or ''} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
