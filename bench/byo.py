"""Bring your own data, as a new user would: the README's steps on a fresh clone, then the results table.

    python -m bench.byo run --name bundestag --raw bench/work/datasets/bundestag.csv [--set train.epochs=4 ...]
    python -m bench.byo table                          # bench/results/DATASETS.md from every finished run

`run` clones this repository (its committed HEAD) into bench/work/byo/<name>, links the virtualenv, copies the file
to data/raw/, points dvc.yaml's `raw` var at it, sets `clean.text_column: text`, `clean.label_column: label` and
`clean.label_names: {}` (the README's steps 1-2; `--set` adds params a user would set), runs `finetune check` and
`dvc repro`, and keeps their output. `table` reads each run's metrics/eval.json, speed.json and the student's
lineage into one table per dataset: teacher, student, int8 student and baseline macro-F1 with CIs, the paired
comparisons, the speed ratios, which student shipped and what the data decided.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from bench.common import OUT, ROOT

WORK = ROOT / "bench" / "work" / "byo"


def sh(cmd: list[str], cwd: Path, log: Path, env: dict) -> int:
    with open(log, "w") as f:
        return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def set_param(params: dict, dotted: str, value: object) -> None:
    *path, key = dotted.split(".")
    node = params
    for k in path:
        node = node[k]
    node[key] = value


def run(name: str, raw: Path, sets: list[str], target: str | None = None) -> None:
    repo = WORK / name
    if repo.exists():
        shutil.rmtree(repo)
    repo.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    dest = repo / "data" / "raw" / raw.name
    shutil.copy(raw, dest)
    dvc_yaml = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("raw: data/raw/sms-spam.csv", f"raw: data/raw/{raw.name}"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["clean"].update(text_column="text", label_column="label", label_names={})
    for s in sets:
        key, _, value = s.partition("=")
        set_param(params, key, yaml.safe_load(value))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    sh(["git", "add", "-A"], repo, repo / "git.log", env)
    sh(["git", "commit", "-qm", f"{name}: data and params"], repo, repo / "git.log", env)
    check = sh(["finetune", "check"], repo, repo / "check.txt", env)
    t0 = time.time()
    code = sh(["dvc", "repro", *(target.split() if target else [])], repo, repo / "repro.log", env)
    (repo / "repro.json").write_text(json.dumps({"name": name, "returncode": code, "check_returncode": check,
                                                 "sets": sets,
                                                 "seconds": round(time.time() - t0, 1), "raw": str(raw),
                                                 "target": target}))
    print(f"{name}: finetune check rc={check}, dvc repro rc={code} in {time.time() - t0:.0f} s")


def commit_of(repo: Path) -> str:
    """The pipeline's commit a run used: the clone's HEAD is `run`'s own data-and-params commit on top of it."""
    out = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %cs", "HEAD~1"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


def teacher_epochs(lineage: dict) -> str:
    e = (lineage.get("resolved") or {}).get("epochs")
    run = (lineage.get("train_metrics") or {}).get("epoch")
    planned = f"{e['value']:g} epochs planned (min_steps)" if e else f"{lineage['params'].get('epochs')} epochs"
    return planned + (f", {run:g} run" if run is not None else "")


def targets_note(name: str, student: dict, cmp: dict) -> str:
    """What the student learned from: the teacher, or its blend with the baseline (distill.blend_baseline)."""
    from run import fmt_diff

    rec = student.get("teacher_targets")
    record_file = WORK / name / "metrics" / "teacher_blend.json"
    if rec is not None and record_file.is_file():
        rec = {**json.loads(record_file.read_text()), **rec}  # the lineage keeps the weight; the record the evidence
    if rec is None:  # a run from before the blend: what the rule decides on its validation rows (blend_rule.py)
        rec = json.loads((OUT / "blend_rule.json").read_text()).get(name) if (OUT / "blend_rule.json").is_file() \
            else None
        if rec is None:
            return "the teacher's logits (run before `distill.blend_baseline`)"
        return (f"the teacher's logits (run before `distill.blend_baseline`; on its validation rows auto keeps "
                f"weight {rec['baseline_weight']:g}: best {rec['best_on_validation']:g}, log-loss gain "
                f"{rec['log_loss_gain']:+.4f}, lower bound {rec['log_loss_gain_lower']:+.4f} — `bench/blend_rule.py`"
                f"{', so the figures stand' if not rec['baseline_weight'] else ''})")
    if "grid" not in rec:  # the blend off, in code that did not yet say what auto would do: the paired auto run
        auto = WORK / f"{name}-blend-auto" / "metrics" / "teacher_blend.json"
        if not auto.is_file():
            return "the teacher's logits (distill.blend_baseline 0)"
        a = json.loads(auto.read_text())
        return (f"the teacher's logits (distill.blend_baseline 0); with auto the baseline weight is "
                f"{a['baseline_weight']:g} (log-loss gain {a['log_loss_gain']:+.4f}, lower bound "
                f"{a['log_loss_gain_lower']:+.4f}): that run is `{name}-blend-auto`, compared in BLEND.md")
    said = (f"distill.blend_baseline {rec.get('setting')}: baseline weight {rec['baseline_weight']:g} (best on "
            f"validation {rec.get('best_on_validation', 0):g}, log-loss gain {rec.get('log_loss_gain', 0):+.4f}, "
            f"lower bound {rec.get('log_loss_gain_lower', 0):+.4f})")
    if "teacher_blend_vs_baseline" not in cmp:
        return said
    return (f"{said}; teacher_blend − baseline: {fmt_diff(cmp['teacher_blend_vs_baseline'])}; student − "
            f"teacher_blend: {fmt_diff(cmp['student_vs_teacher_blend'])} (keeps "
            f"{cmp['student_vs_teacher_blend']['macro_f1_retained']:.1%}, int8 "
            f"{cmp['student_onnx_vs_teacher_blend']['macro_f1_retained']:.1%})")


def table() -> str:
    from run import fmt_ci, fmt_diff, machine

    lines = ["# Results on real datasets, brought in with the README's steps", "",
             f"Written {machine()['date']}; each row is `python -m bench.byo run …` (a fresh clone, the README's "
             "steps, `dvc repro` with the defaults unless `--set` says otherwise) on 2 CPU cores. Macro-F1 on the "
             "test rows with 95% bootstrap CIs; differences are paired (same rows), * = the CI excludes 0. "
             "`params set: ['distill.blend_baseline=0']` is today's default (it was `auto` at those runs' commit; "
             "the `auto` twins are compared in BLEND.md).", ""]
    for repo in sorted(p for p in WORK.iterdir() if (p / "repro.json").is_file()):
        run_info = json.loads((repo / "repro.json").read_text())
        if run_info.get("target"):
            continue  # a partial run (e.g. for bench/long_docs.py): no results table
        if run_info.get("name", repo.name) != repo.name:
            continue  # a copy another bench changed (bench/shift.py's arms, a tune run): not this run's results
        if any(s.startswith("split.fold=") for s in run_info.get("sets", [])):
            continue  # one fold of a k-fold run: bench/kfold_runs.py pools the folds into KFOLD.md
        if run_info["returncode"] != 0 or not (repo / "metrics" / "eval.json").is_file():
            lines += [f"## {repo.name}: dvc repro failed (see {repo / 'repro.log'})", ""]
            continue
        ev = json.loads((repo / "metrics" / "eval.json").read_text())
        sp = json.loads((repo / "metrics" / "speed.json").read_text())
        split = json.loads((repo / "metrics" / "data" / "split.json").read_text())
        clean = json.loads((repo / "metrics" / "data" / "clean.json").read_text())
        student = json.loads((repo / "data" / "models" / "student" / "lineage.json").read_text())
        teacher = json.loads((repo / "data" / "models" / "teacher" / "lineage.json").read_text())
        baseline = json.loads((repo / "data" / "models" / "baseline" / "lineage.json").read_text())
        cmp = ev["comparisons"]
        tried = student.get("student_search", {}).get("tried", [])
        shipped = next((t for t in tried if t.get("shipped")), None)
        r = teacher.get("resolved", {})
        lines += [f"## {repo.name}", "",
                  f"{clean.get('rows_in')} raw rows, {clean.get('rows_out')} after clean "
                  f"(dropped {clean.get('dropped', {})}); test {split['per_split']['test']['rows']} rows; "
                  f"{len(teacher['label_names'])} classes; teacher reads {r.get('max_length')} tokens "
                  f"({r.get('truncation')}, {r.get('length', {}).get('truncated_rows', 0):.1%} of training rows cut), "
                  f"class weights {'on' if r.get('class_weights', {}).get('used') else 'off'} "
                  f"(ratio {r.get('class_weights', {}).get('imbalance_ratio')}); baseline analyzer "
                  f"{baseline.get('resolved', {}).get('analyzer')}; teacher trained {teacher_epochs(teacher)}; "
                  f"params set: {run_info['sets'] or 'none'}; `dvc repro` {run_info['seconds'] / 60:.0f} min at "
                  f"commit {commit_of(repo)}.", "",
                  "| model | test macro-F1 [95% CI] | throughput vs teacher (CPU, batch 32) |", "|---|---|---|"]
        for name in ("teacher", "student", "student_onnx", "baseline", "teacher_blend"):
            if name not in ev:
                continue
            ratio = sp.get(f"{name}_vs_teacher", {}).get("throughput_speedup")
            shown = "1" if name == "teacher" else "(teacher + baseline)" if name == "teacher_blend" else ratio or ""
            lines.append(f"| {name} | {fmt_ci(ev[name]['macro_f1_ci'])} | {shown} |")
        lines += ["", f"- teacher − baseline: {fmt_diff(cmp['teacher_vs_baseline'])}",
                  f"- student − teacher: {fmt_diff(cmp['student_vs_teacher'])}; student keeps "
                  f"{cmp['student_vs_teacher']['macro_f1_retained']:.1%}, int8 student "
                  f"{cmp['student_onnx_vs_teacher']['macro_f1_retained']:.1%} of the teacher's macro-F1",
                  "- students tried: " + ("; ".join(
                      f"`{t['key']}` val ratio {t['evidence']['ratio']:.3f}, lower bound "
                      f"{t['evidence']['ratio_lower']:.3f}, classes worse {t['evidence']['classes_worse'] or 'none'}"
                      f" -> {'shipped' if t.get('shipped') else 'rejected'}" if t.get("evidence") else
                      f"`{t['key']}` -> {'shipped' if t.get('shipped') else 'rejected'}" for t in tried)
                      or "one") + (f"; shipped `{shipped['key']}`" if shipped else ""),
                  "- student's targets: " + targets_note(repo.name, student, cmp), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--raw", required=True, type=Path)
    r.add_argument("--set", action="append", default=[], help="params key=value a user would set")
    r.add_argument("--target", help="a stage to stop at (dvc repro <stage>), e.g. train for bench/long_docs.py")
    sub.add_parser("table")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.name, args.raw.resolve(), args.set, args.target)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "DATASETS.md").write_text(table())
        print((OUT / "DATASETS.md").read_text())


if __name__ == "__main__":
    main()
