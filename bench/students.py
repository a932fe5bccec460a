"""Student shapes side by side: each distilled student as torch and as int8 ONNX, against its torch teacher.

    python -m bench.students --name sms --teacher data/models/teacher --data data/processed \
        --student default=data/models/student --student ffn384=/path/to/student ...

Students come from `distill` runs with different params (`distill.layers`, `distill.intermediate_size`,
`distill.hidden_weight`); this script trains nothing. For each it reports test macro-F1 of the torch student and of
its int8 ONNX export (the `export` stage's recipe chooser, `quantize: auto`, unless `--quantize label=recipe` names
one, as `export.quantize` would), both as a share of the teacher's, and CPU throughput at batch 32 and latency at
batch 1, timed by `evaluate`'s own interleaved `measure_speed` in one run, as ratios to the teacher. Results are
appended to bench/results/students.json under `--name` and the table is rewritten to bench/results/STUDENTS.md,
with the machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from bench.common import OUT, machine, torch_predictor
from pipeline.core.params import replace


def measure(teacher: str, data: Path, students: dict[str, str], seed: int = 42,
            recipes: dict[str, str] | None = None) -> dict:
    import numpy as np

    from pipeline.core.io import read_table
    from pipeline.core.metrics import classification_metrics
    from pipeline.core.modeling import load_classifier, load_tokenizer, predict_logits
    from pipeline.core.onnx_model import OnnxClassifier
    from pipeline.core.params import EvaluateParams, ExportParams
    from pipeline.core.speed import measure_speed
    from pipeline.stages.export import export_one, selection_rows

    df = read_table(data / "test.parquet")
    p = ExportParams()
    selection = selection_rows(read_table(data / "val.parquet"), read_table(data / "train.parquet"),
                               p.selection_rows, seed)
    texts = df["text"].tolist()
    model = load_classifier(teacher)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    y = df["label"].map({n: i for i, n in enumerate(names)}).to_numpy()

    def f1(logits: np.ndarray) -> float:
        return classification_metrics(y, logits.argmax(1), names)["macro_f1"]

    tok = load_tokenizer(teacher)
    f1_teacher = f1(predict_logits(model, tok, texts, 64, 128, device="cpu", progress=False))
    predictors = {"teacher": torch_predictor(teacher)}
    rows: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp())
    for name, folder in students.items():
        cfg = load_classifier(folder).config
        quantize = (recipes or {}).get(name, p.quantize)  # a named recipe still has to pass the test-row bounds
        figures = export_one(Path(folder), tmp / name, texts, y, replace(p, quantize=quantize), selection)
        onnx = OnnxClassifier(tmp / name)
        rows[name] = {"layers": cfg.num_hidden_layers, "intermediate_size": cfg.intermediate_size,
                      "macro_f1_torch": round(figures["macro_f1_torch"], 4),
                      "macro_f1_onnx": round(figures["macro_f1_onnx"], 4),
                      "retained_torch": round(figures["macro_f1_torch"] / f1_teacher, 4),
                      "retained_onnx": round(figures["macro_f1_onnx"] / f1_teacher, 4),
                      "recipe": figures["recipe"], "size_mib_onnx": round(figures["size_bytes_onnx"] / 2**20, 1)}
        predictors[f"{name}"] = torch_predictor(folder)
        predictors[f"{name}_onnx"] = (lambda o: lambda b: o.logits(b, 32))(onnx)
    speed = measure_speed(predictors, texts, EvaluateParams(throughput_batches=10, latency_runs=90))
    t = speed["teacher"]
    for name, row in rows.items():
        for key, label in ((name, "torch"), (f"{name}_onnx", "onnx")):
            s = speed[key]
            row[f"throughput_{label}"] = round(s["cpu_samples_per_s_batch"] / t["cpu_samples_per_s_batch"], 2)
            row[f"latency_{label}"] = round(t["cpu_latency_ms_batch1"] / s["cpu_latency_ms_batch1"], 2)
            row[f"samples_per_s_{label}"] = round(s["cpu_samples_per_s_batch"])
    return {"teacher": {"macro_f1": round(f1_teacher, 4), **t}, "test_rows": len(texts), "students": rows}


def markdown(all_results: dict, machine: dict) -> str:
    lines = ["# Student shapes: quality kept vs speed, per dataset", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, onnxruntime "
             f"{machine['onnxruntime']}. Produced by `bench/students.py`; ratios are to the torch teacher, timed "
             "side by side in one run (throughput at batch 32, latency at batch 1).", "",
             "| dataset (test rows) | student | layers × FFN | macro-F1 kept: torch / ONNX as shipped | "
             "throughput: torch / ONNX as shipped | latency b1: ONNX | ONNX recipe (none = fp32), size |",
             "|---|---|---|---|---|---|---|"]
    for dataset, r in all_results.items():
        for name, s in r["students"].items():
            lines.append(f"| {dataset} ({r['test_rows']}) | {name} | {s['layers']} × {s['intermediate_size']} | "
                         f"{s['retained_torch']:.1%} / {s['retained_onnx']:.1%} | {s['throughput_torch']:.2f}× / "
                         f"**{s['throughput_onnx']:.2f}×** | {s['latency_onnx']:.1f}× | {s['recipe']}, "
                         f"{s['size_mib_onnx']} MiB |")
    lines.append("")
    return "\n".join(lines)


def teacher_args(description: str) -> argparse.ArgumentParser:
    """The arguments of every bench that compares students of one teacher on one dataset."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--name", required=True, help="dataset label for the table")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True, type=Path, help="folder with train/val/test.parquet (split's output)")
    return ap


def main() -> None:
    import platform

    import onnxruntime
    import torch

    ap = teacher_args(__doc__.splitlines()[0])
    ap.add_argument("--student", action="append", required=True, help="label=folder (repeat)")
    ap.add_argument("--quantize", action="append", default=[],
                    help="label=recipe: export that student with `export.quantize: recipe` instead of auto")
    args = ap.parse_args()
    students = dict(s.split("=", 1) for s in args.student)
    recipes = dict(s.split("=", 1) for s in args.quantize)
    m = machine()
    info = {"cpu": m.get("cpu", platform.processor()), "cores": m.get("cores", os.cpu_count()),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "date": dt.date.today().isoformat()}
    path = OUT / "students.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved.setdefault("results", {})[args.name] = measure(args.teacher, args.data, students, recipes=recipes)
    saved["machine"] = info
    path.write_text(json.dumps(saved, indent=2) + "\n")
    (OUT / "STUDENTS.md").write_text(markdown(saved["results"], info))
    print(markdown(saved["results"], info))


if __name__ == "__main__":
    main()
