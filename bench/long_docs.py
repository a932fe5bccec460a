"""Long documents: does reading past the first 128 tokens pay, and how should a long text be cut?

    python -m bench.long_docs --project /path/to/project   # a project where `dvc repro` has run on long texts

Trains the teacher again with the project's own params and data (its train/val split, seed, epochs), changing only
how much of each text it reads — 128 tokens from the start (the old default), `max_length_cap` tokens from the start
(`truncation: head`), and the default (`max_length: auto` with `truncation: head_tail`: the project's own teacher,
reused) — and scores every variant on the same test rows: macro-F1 with its CI, the paired difference against the
default, and the training time. Writes bench/results/long_docs.json and LONG_DOCS.md with the machine.
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
    "head 128": {"max_length": 128, "truncation": "head"},
    "head, cap": {"truncation": "head"},  # max_length: auto, as the default
}


def train_variant(project: Path, work: Path, name: str, over: dict) -> tuple[Path, float]:
    out = work / name.replace(" ", "_").replace(",", "")
    if (out / "teacher" / "lineage.json").is_file():
        return out / "teacher", json.loads((out / "seconds.json").read_text())["seconds"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(over)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.time()
    cmd = [sys.executable, "-m", "pipeline.stages.train", "--params", str(out / "params.yaml"),
           "--train", "data/processed/train.parquet", "--val", "data/processed/val.parquet",
           "--output", str(out / "teacher"), "--checkpoints", str(out / "ckpt"), "--live", str(out / "live")]
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, cwd=project, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = round(time.time() - t0, 1)
    (out / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return out / "teacher", seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", required=True, help="a project folder after `dvc repro` (its data and teacher)")
    ap.add_argument("--name", help="dataset name in the results (default: the folder's name)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--unseen", help="a CSV (label,text) of more rows of the same source, none of them in the "
                                     "project: scored too, for CIs a small test split cannot give")
    ap.add_argument("--unseen-rows", type=int, default=1000)
    args = ap.parse_args()
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.modeling import lineage_max_length, lineage_truncation
    from pipeline.core.stats import metric_ci, paired_comparison

    project = Path(args.project).resolve()
    name = args.name or project.name
    work = ROOT / "bench" / "work" / "long_docs" / name
    test = pd.read_parquet(project / "data" / "processed" / "test.parquet")
    default = project / "data" / "models" / "teacher"
    teachers = {"default (auto, head_tail)": (default, json.loads((default / "lineage.json").read_text())
                                              .get("train_metrics", {}).get("train_runtime"))}
    for variant, over in VARIANTS.items():
        teachers[variant] = train_variant(project, work, variant, over)
    names = json.loads((default / "lineage.json").read_text())["label_names"]
    if args.unseen:
        seen = set(pd.read_parquet(project / "data" / "interim" / "clean.parquet")["text"])
        for raw in (project / "data" / "raw").glob("*.csv"):  # the raw texts too (clean normalises them)
            seen |= set(pd.read_csv(raw)["text"].dropna())
        extra = pd.read_csv(args.unseen)
        extra = extra[extra["label"].isin(names) & ~extra["text"].isin(seen) & extra["text"].notna()]
        extra = extra.sample(n=min(args.unseen_rows, len(extra)), random_state=0)
        test = pd.concat([test[["text", "label"]], extra[["text", "label"]]], ignore_index=True)
    y = test["label"].map({n: i for i, n in enumerate(names)}).to_numpy()
    metric = macro_f1_fn(len(names))
    preds, rows = {}, {}
    for variant, (folder, seconds) in teachers.items():
        lin = json.loads((folder / "lineage.json").read_text())
        preds[variant] = teacher_predictions(folder, test["text"].tolist())
        length = lin.get("resolved", {}).get("length", {})
        rows[variant] = {"max_length": lineage_max_length(lin), "truncation": lineage_truncation(lin),
                         "truncated_rows": length.get("truncated_rows"), "tokens_not_read": length.get(
                             "tokens_not_read"), "macro_f1": metric_ci(y, preds[variant], metric, seed=0),
                         "train_seconds": seconds}
    ref = "default (auto, head_tail)"
    for variant in teachers:
        if variant != ref:
            rows[variant]["vs_default"] = paired_comparison(y, preds[variant], preds[ref], metric, name_a=variant,
                                                            name_b="default", seed=0)
    own = len(pd.read_parquet(project / "data" / "processed" / "test.parquet"))
    row = {"test_rows": len(test), "variants": rows,
           "unseen": f"{len(test) - own} rows of {Path(args.unseen).name} not in the project, with its {own} test "
                     "rows" if args.unseen else None}
    sys.stdout.write(record(Path(args.out), "long_docs", name, row, markdown))


def markdown(results: dict) -> str:
    lines = ["# Long documents: how much of each text the teacher reads", "",
             f"{measured(results['machine'])}. Produced by `python -m bench.long_docs --project <folder>`; each "
             "variant is the teacher trained with the project's own params and split, changing only its reading.",
             ""]
    for ds, r in results["datasets"].items():
        lines += [f"**{ds}** ({r['test_rows']} test rows" + (f": {r['unseen']}" if r.get("unseen") else "") + ")",
                  "",
                  "| teacher reads | training rows cut | tokens not read | test macro-F1 [95% CI] "
                  "| vs default [95% CI] | train time (s) |", "|---|---|---|---|---|---|"]
        for variant, v in r["variants"].items():
            vs = v.get("vs_default")
            delta = fmt_diff(vs, 4, " **significant**") if vs else "reference"
            cut = "" if v["truncated_rows"] is None else f"{v['truncated_rows']:.1%}"
            lost = "" if v["tokens_not_read"] is None else f"{v['tokens_not_read']:.1%}"
            lines.append(f"| {variant}: {v['max_length']} tokens, {v['truncation']} | {cut} | {lost} | "
                         f"{fmt_ci(v['macro_f1'], 4)} | {delta} | "
                         f"{v['train_seconds'] or ''} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
