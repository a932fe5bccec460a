"""Does the student gain from learning the teacher-baseline blend? A byo run (the student learns from the teacher
alone, `distill.blend_baseline: 0`, the default) against a copy with `auto`, side by side on the same test rows.

    python -m bench.blend_ablation run bundestag        # copies bench/work/byo/bundestag to bundestag-blend-auto,
                                                        # sets distill.blend_baseline auto, dvc repro (teacher cached)
    python -m bench.blend_ablation report bundestag tweedekamer   # -> bench/results/BLEND.md, blend.json

`run` copies the finished workspace (DVC cache included: train, baseline and the data stages stay cached) and
reruns teacher_logits, distill, export and evaluate. `report` compares each pair's students (and int8 students)
with a paired bootstrap CI of the macro-F1 difference on the same test rows. (The runs of 2026-11-30 were made the
other way round, when auto was the default: the auto run first, then the copy set to 0; the same pair.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from bench.common import OUT, ROOT

WORK = ROOT / "bench" / "work" / "byo"


def run(name: str) -> None:
    src, dest = WORK / name, WORK / f"{name}-blend-auto"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["distill"]["blend_baseline"] = "auto"
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    t0 = time.time()
    with open(dest / "repro.log", "w") as f:
        code = subprocess.run(["dvc", "repro"], cwd=dest, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    info = json.loads((src / "repro.json").read_text())
    (dest / "repro.json").write_text(json.dumps({**info, "returncode": code, "seconds": round(time.time() - t0, 1),
                                                 "sets": [*info["sets"], "distill.blend_baseline=auto"]}))
    print(f"{dest.name}: dvc repro rc={code} in {time.time() - t0:.0f} s")


def predictions(repo: Path, model: str) -> pd.DataFrame:
    p = pd.read_parquet(repo / "data" / "eval" / "test_predictions.parquet")
    return p[p["model"] == model].set_index("id").sort_index()


def compare(name: str) -> dict:
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.stats import metric_ci, paired_comparison

    a, b = WORK / f"{name}-blend-auto", WORK / name
    blend = json.loads((a / "metrics" / "teacher_blend.json").read_text())
    labels = json.loads((a / "data" / "models" / "teacher" / "lineage.json").read_text())["label_names"]
    to_id = {n: i for i, n in enumerate(labels)}
    metric = macro_f1_fn(len(labels))
    out = {"baseline_weight": blend["baseline_weight"], "models": {}}
    ref = predictions(a, "teacher")
    y = ref["label"].map(to_id).to_numpy()
    for model in ("teacher", "baseline", "student", "student_onnx"):
        pa, pb = predictions(a, model), predictions(b, model)
        assert pa.index.equals(pb.index) and pa.index.equals(ref.index)
        xa, xb = pa["prediction"].map(to_id).to_numpy(), pb["prediction"].map(to_id).to_numpy()
        out["models"][model] = {"blend": metric_ci(y, xa, metric), "teacher_only": metric_ci(y, xb, metric),
                                "blend_minus_teacher_only": paired_comparison(y, xa, xb, metric, name_a="blend",
                                                                              name_b="teacher only")}
        out["models"][model]["blend_minus_teacher_only"].pop("verdict")
    out["test_rows"] = int(len(y))
    return out


def report(names: list[str]) -> None:
    from run import fmt_ci, fmt_diff, machine

    results = {n: compare(n) for n in names}
    (OUT / "blend.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    lines = ["# The student's targets: the teacher alone, or blended with the TF-IDF baseline", "",
             f"Written {machine()['date']} by `python -m bench.blend_ablation report {' '.join(names)}`. Each "
             "dataset: its byo run (README steps) with `distill.blend_baseline: auto` and with `0` (the teacher "
             "alone), the same teacher, baseline and split; test macro-F1 with 95% bootstrap CIs, differences paired "
             "on the same test rows (* = the CI excludes 0). 2 CPU cores. Neither student difference is "
             "significant and their signs disagree, so the default is 0.", ""]
    for n, r in results.items():
        lines += [f"## {n} ({r['test_rows']} test rows; auto chose baseline weight {r['baseline_weight']:g})", "",
                  "| model | targets: blend (auto) | targets: teacher alone | blend − teacher alone |",
                  "|---|---|---|---|"]
        for m, x in r["models"].items():
            lines.append(f"| {m} | {fmt_ci(x['blend'])} | {fmt_ci(x['teacher_only'])} | "
                         f"{fmt_diff(x['blend_minus_teacher_only'])} |")
        lines.append("")
    (OUT / "BLEND.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    cmd, *names = sys.argv[1:]
    if cmd == "run":
        for n in names:
            run(n)
    else:
        report(names)


if __name__ == "__main__":
    main()
