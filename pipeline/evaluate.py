"""evaluate: teacher, student, baseline on data/processed/test.parquet -> metrics, models/ (params: evaluate).

Writes one metrics file keyed by model (accuracy, macro/weighted F1, per-class precision/recall/F1, parameter
count, size on disk, CPU throughput at batch 32 and latency at batch 1), confusion matrices as `dvc plots`
sources, the misclassified test rows, and `models/<name>/`: each trained model with a model card (README.md)
giving its test metrics, params and the md5 (as in dvc.lock) of the data it was trained on.

Speeds are measured in interleaved rounds (teacher, student, teacher, …) in one process, so the
student/teacher ratio is fair on a noisy shared machine even when absolute figures drift.
"""
from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.io import (
    DataError,
    atomic_path,
    read_table,
    setup_logging,
    stage_args,
    write_csv,
    write_json,
)
from pipeline.modeling import (
    classification_metrics,
    load_classifier,
    load_tokenizer,
    predict_logits,
)
from pipeline.params import EvaluateParams, load_params

log = logging.getLogger(__name__)

TRANSFORMERS = ("teacher", "student")
ROUNDS = 3


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".joblib"))


def measure_speed(predictors: dict[str, Callable[[list[str]], Any]], texts: list[str], p: EvaluateParams) -> dict:
    """Throughput (samples/s, batch `p.batch_size`) and median latency (ms, batch 1), interleaved per round."""
    reps = (p.batch_size * p.throughput_batches + len(texts) - 1) // len(texts)
    pool = (texts * reps)[: p.batch_size * p.throughput_batches]
    batches = [pool[i:i + p.batch_size] for i in range(0, len(pool), p.batch_size)]
    singles = (texts * (p.latency_runs // len(texts) + 1))[: p.latency_runs]
    thr: dict[str, list[float]] = {k: [] for k in predictors}
    lat: dict[str, list[float]] = {k: [] for k in predictors}
    for fn in predictors.values():  # warm-up: first calls allocate and pick kernels
        fn(batches[0])
        fn(singles[:1])
    for _ in range(ROUNDS):
        for name, fn in predictors.items():
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            thr[name].append(len(pool) / (time.perf_counter() - t0))
            for s in singles[: max(1, len(singles) // ROUNDS)]:
                t0 = time.perf_counter()
                fn([s])
                lat[name].append((time.perf_counter() - t0) * 1000)
    return {name: {"cpu_samples_per_s_batch": round(statistics.median(thr[name]), 2),
                   "cpu_latency_ms_batch1": round(statistics.median(lat[name]), 3)} for name in predictors}


def transformer_predictor(model: Any, tokenizer: Any, max_length: int) -> Callable[[list[str]], Any]:
    import torch

    model = model.to("cpu").eval()

    def predict(texts: list[str]) -> Any:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits

    return predict


def model_card(name: str, folder: Path, metrics: dict, lineage: dict, label_names: list[str]) -> str:
    base = lineage.get("base_model") or lineage.get("teacher") or ""
    front = ["---", "library_name: " + ("sklearn" if name == "baseline" else "transformers"),
             "pipeline_tag: text-classification", "tags: [finetune-pipeline, dvc]"]
    if base and name == "teacher":
        front.append(f"base_model: {base}")
    front.append("---")
    rows = "\n".join(f"| {lab} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                     for lab, v in metrics["per_class"].items())
    data = "\n".join(f"| {k} | `{v['path']}` | `{v['md5']}` |" for k, v in lineage.get("data", {}).items())
    how = {
        "teacher": f"Fine-tuned from `{base}` with `transformers.Trainer` by the `train` stage.",
        "student": f"Distilled from the teacher (`{base}`) by the `distill` stage.",
        "baseline": "TF-IDF + logistic regression (scikit-learn) by the `baseline` stage.",
    }[name]
    use = (f'```python\nfrom transformers import pipeline\nclf = pipeline("text-classification", model="{folder}")\n'
           'clf("WINNER!! Claim your prize now")\n```' if name != "baseline" else
           f'```python\nimport joblib\nclf = joblib.load("{folder}/model.joblib")\n'
           'clf.predict(["WINNER!! Claim your prize now"])\n```')
    return f"""{chr(10).join(front)}
# {name}

{how} Labels: {', '.join(label_names)}.

## Test metrics
| metric | value |
|---|---|
| accuracy | {metrics['accuracy']:.4f} |
| macro F1 | {metrics['macro_f1']:.4f} |
| weighted F1 | {metrics['weighted_f1']:.4f} |
| parameters | {metrics.get('parameters', 'n/a')} |
| size on disk (bytes) | {metrics['size_bytes']} |
| CPU samples/s (batch {metrics.get('batch_size', '')}) | {metrics.get('cpu_samples_per_s_batch', 'n/a')} |
| CPU latency ms (batch 1) | {metrics.get('cpu_latency_ms_batch1', 'n/a')} |

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

## Lineage
Trained with seed {lineage.get('seed')} on these files (md5 as recorded in `dvc.lock`); every row in them carries
`id`, `source_id` and `origin`, tracing it to a row of the raw file.

| role | path | md5 |
|---|---|---|
{data}

## Params
```json
{json.dumps(lineage.get('params', {}), indent=2, sort_keys=True)}
```

## Use
{use}
"""


def package(name: str, src: Path, dest: Path, card: str) -> None:
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "test", "teacher", "student", "baseline", "metrics", "plots_dir",
                      "misclassified", "models_dir", argv=argv)
    params = load_params(args.params)
    p = params.evaluate
    if p.num_threads:
        import torch

        torch.set_num_threads(p.num_threads)
    test = read_table(args.test)
    dirs = {"teacher": Path(args.teacher), "student": Path(args.student), "baseline": Path(args.baseline)}
    lineage = {k: json.loads((d / "lineage.json").read_text()) for k, d in dirs.items()}
    label_names = lineage["teacher"]["label_names"]
    for k, lin in lineage.items():
        if lin["label_names"] != label_names:
            raise DataError(f"{dirs[k]}: labels {lin['label_names']} differ from the teacher's {label_names}")
    unseen = sorted(set(test["label"]) - set(label_names))
    if unseen:
        raise DataError(f"{args.test}: label(s) {unseen} never seen in training {label_names}")
    to_id = {n: i for i, n in enumerate(label_names)}
    y = test["label"].map(to_id).to_numpy()
    texts = test["text"].tolist()

    results: dict[str, dict] = {}
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    predictors: dict[str, Callable] = {}
    for name in TRANSFORMERS:
        model, tok = load_classifier(str(dirs[name]), name), load_tokenizer(str(dirs[name]), name)
        max_length = lineage[name]["params"]["max_length"]
        logits = predict_logits(model, tok, texts, p.batch_size, max_length, device="cpu", progress=False)
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        preds[name] = (prob.argmax(1), prob.max(1))
        results[name] = {**classification_metrics(y, preds[name][0], label_names),
                         "parameters": int(sum(x.numel() for x in model.parameters())),
                         "size_bytes": dir_size(dirs[name])}
        predictors[name] = transformer_predictor(model, tok, max_length)
    import joblib

    baseline = joblib.load(dirs["baseline"] / "model.joblib")
    bprob = baseline.predict_proba(texts)
    preds["baseline"] = (bprob.argmax(1), bprob.max(1))
    results["baseline"] = {**classification_metrics(y, preds["baseline"][0], label_names),
                           "size_bytes": dir_size(dirs["baseline"])}
    predictors["baseline"] = baseline.predict_proba

    log.info("timing CPU inference (%d rounds, interleaved)", ROUNDS)
    for name, speed in measure_speed(predictors, texts, p).items():
        results[name].update(speed, batch_size=p.batch_size)

    t, s, b = results["teacher"], results["student"], results["baseline"]
    results["student_vs_teacher"] = {
        "macro_f1_retained": round(s["macro_f1"] / t["macro_f1"], 4) if t["macro_f1"] else 0.0,
        "throughput_speedup": round(s["cpu_samples_per_s_batch"] / t["cpu_samples_per_s_batch"], 3),
        "latency_speedup": round(t["cpu_latency_ms_batch1"] / s["cpu_latency_ms_batch1"], 3),
        "size_ratio": round(s["size_bytes"] / t["size_bytes"], 3),
    }
    results["teacher_vs_baseline"] = {"macro_f1_delta": round(t["macro_f1"] - b["macro_f1"], 4)}

    plots = Path(args.plots_dir)
    wrong = []
    for name, (pred, conf) in preds.items():
        write_csv(pd.DataFrame({"actual": test["label"], "predicted": [label_names[i] for i in pred]}),
                  plots / f"confusion_{name}.csv")
        miss = pred != y
        wrong.append(pd.DataFrame({"model": name, "id": test["id"][miss], "label": test["label"][miss],
                                   "predicted": [label_names[i] for i in pred[miss]],
                                   "confidence": conf[miss].round(4), "text": test["text"][miss]}))
    wrong_df = pd.concat(wrong, ignore_index=True).sort_values(["model", "confidence"], ascending=[True, False])
    write_csv(wrong_df.groupby("model", sort=False).head(p.max_misclassified), args.misclassified)
    write_json(results, args.metrics)
    for name, d in dirs.items():
        dest = Path(args.models_dir) / name
        package(name, d, dest, model_card(name, dest, results[name], lineage[name], label_names))
    log.info("test macro-F1: teacher %.4f, student %.4f, baseline %.4f; student keeps %.1f%% at %.2fx throughput",
             t["macro_f1"], s["macro_f1"], b["macro_f1"], 100 * results["student_vs_teacher"]["macro_f1_retained"],
             results["student_vs_teacher"]["throughput_speedup"])


if __name__ == "__main__":
    main()
