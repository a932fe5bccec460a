"""Long texts at review length: which student ships, what it keeps, and how fast its int8 export runs.

    python -m bench.byo run --name news-1200-len128 --raw bench/work/datasets/news-articles-1200.csv \
        --set train.max_length_cap=128 --set 'distill.try_first=[...]'      # one run per dataset, then:
    python -m bench.long_students news-1200-len128 20ng-1500-len128

Reads finished `bench.byo` runs (the README's steps on a fresh clone): each student the chain tried with its
validation evidence (ratio to the teacher and its one-sided lower bound), which shipped, its test macro-F1 kept as
torch and as the ONNX model export shipped (and with which int8 recipe), and the throughput ratio `evaluate` timed
side by side with the teacher. Writes bench/results/long_students.json and LONG_STUDENTS.md with the machine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import OUT, fmt_ci, fmt_diff, measured, record

WORK = Path(__file__).resolve().parent / "work" / "byo"


def shape(t: dict) -> str:
    layers = t.get("layers") or []
    ffn = t.get("intermediate_size") or 0
    return (f"{len(layers)} layer{'s' if len(layers) > 1 else ''} {layers}" + (f", FFN {ffn}" if ffn else "")
            + (f", hidden_weight {t['hidden_weight']:g}" if t.get("hidden_weight") else ""))


def summarise(repo: Path) -> dict:
    def read(rel: str) -> dict:
        return json.loads((repo / rel).read_text())

    ev, sp, ex = read("metrics/eval.json"), read("metrics/speed.json"), read("metrics/export.json")["student"]
    student, teacher = read("data/models/student/lineage.json"), read("data/models/teacher/lineage.json")
    run = read("repro.json")
    cmp = ev["comparisons"]
    tried = [{"shape": shape(t), "val_ratio": t.get("evidence", {}).get("ratio"),
              "val_ratio_lower": t.get("evidence", {}).get("ratio_lower"),
              "classes_worse": t.get("evidence", {}).get("classes_worse"), "shipped": bool(t.get("shipped"))}
             for t in student.get("student_search", {}).get("tried", [])]
    return {"sets": run["sets"], "repro_minutes": round(run["seconds"] / 60, 1), "resumed": run.get("resumed"),
            "max_length": teacher.get("resolved", {}).get("max_length"),
            "test_rows": read("metrics/data/split.json")["per_split"]["test"]["rows"],
            "classes": len(teacher["label_names"]),
            "teacher": ev["teacher"]["macro_f1_ci"], "baseline": ev["baseline"]["macro_f1_ci"],
            "teacher_vs_baseline": cmp["teacher_vs_baseline"], "tried": tried,
            "student_kept": cmp["student_vs_teacher"]["macro_f1_retained"],
            "onnx_kept": cmp["student_onnx_vs_teacher"]["macro_f1_retained"],
            "student_vs_teacher": cmp["student_vs_teacher"], "recipe": ex["recipe"],
            "onnx_speed": sp["student_onnx_vs_teacher"]["throughput_speedup"],
            "onnx_latency": sp["student_onnx_vs_teacher"]["latency_speedup"],
            "torch_student_speed": sp["student_vs_teacher"]["throughput_speedup"]}


def markdown(results: dict) -> str:
    lines = ["# Long texts at review length: the student that ships, and its int8 speed", "",
             f"{measured(results['machine'])}. Each dataset is one `python -m bench.byo run` (a fresh clone, the "
             "README's steps, `dvc repro`), summarised by `python -m bench.long_students`. Speed: the shipped ONNX "
             "student's CPU throughput at batch 32 over the torch teacher's, timed side by side by `evaluate`.", ""]
    for name, r in results["datasets"].items():
        lines += [f"**{name}** — {r['test_rows']} test rows, {r['classes']} classes, {r['max_length']} tokens read; "
                  f"params set: `{r['sets']}`; `dvc repro` {r['repro_minutes']} min"
                  + (f" ({r['resumed']})" if r.get("resumed") else ""), "",
                  f"- teacher {fmt_ci(r['teacher'])}, TF-IDF baseline {fmt_ci(r['baseline'])}, teacher − baseline "
                  f"{fmt_diff(r['teacher_vs_baseline'])}",
                  f"- student − teacher {fmt_diff(r['student_vs_teacher'])}: the student keeps "
                  f"**{r['student_kept']:.1%}** (torch) / **{r['onnx_kept']:.1%}** (ONNX, recipe `{r['recipe']}`) of "
                  f"the teacher's test macro-F1 at **{r['onnx_speed']:.2f}×** its throughput (latency "
                  f"{r['onnx_latency']:.2f}×; torch student {r['torch_student_speed']:.2f}×)", "",
                  "| student tried, in order | validation ratio to the teacher | 90% lower bound | classes worse | "
                  "verdict |", "|---|---|---|---|---|"]
        if r.get("note"):
            lines[-2:-2] = [f"- {r['note']}", ""]
        for t in r["tried"]:
            lines.append(f"| {t['shape']} | {t['val_ratio'] if t['val_ratio'] is not None else '-'} | "
                         f"{t['val_ratio_lower'] if t['val_ratio_lower'] is not None else '-'} | "
                         f"{', '.join(t['classes_worse'] or []) or 'none'} | "
                         f"{'**shipped**' if t['shipped'] else 'refused'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="bench.byo run names (folders under bench/work/byo)")
    ap.add_argument("--note", action="append", default=[], metavar="RUN=TEXT",
                    help="a line to print under a run (e.g. what an earlier, interrupted attempt of it measured)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    notes = dict(n.split("=", 1) for n in args.note)
    for name in args.runs:
        row = {**summarise(WORK / name), "note": notes.get(name)}
        print(record(Path(args.out), "long_students", name, row, markdown))


if __name__ == "__main__":
    main()
