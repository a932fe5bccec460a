"""evaluate: teacher, student, baseline on data/processed/test.parquet -> metrics, models/ (params: evaluate).

Writes two metrics files keyed by model: quality (`eval.json`: accuracy and macro-F1 with bootstrap 95% CIs,
weighted F1, per-class precision/recall/F1, parameter count, size on disk, and paired comparisons on the same
test rows — teacher vs baseline, student vs teacher — with the CI of the macro-F1 difference and McNemar's exact
p) and speed (`speed.json`: CPU throughput at batch 32, latency at batch 1), so that `dvc metrics diff` of two
runs with identical models shows no quality change. Also a readable `REPORT.md`, confusion matrices as
`dvc plots` sources, the misclassified test rows, and `models/<name>/`: each trained model with a model card
(README.md) giving its test metrics, params and the md5 (as in dvc.lock) of the data it was trained on.

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
from sklearn.metrics import f1_score

from pipeline.fetch import source_record
from pipeline.io import (
    DataError,
    atomic_path,
    file_md5,
    read_table,
    run_stage,
    setup_logging,
    stage_args,
    write_csv,
    write_json,
    write_table,
    write_text,
)
from pipeline.modeling import (
    classification_metrics,
    lineage_max_length,
    lineage_truncation,
    load_baseline,
    load_classifier,
    load_tokenizer,
    predict_logits,
    read_texts,
)
from pipeline.onnx_model import FP32_FILE, ONNX_FILE, OnnxClassifier
from pipeline.params import EvaluateParams, as_dict, load_params
from pipeline.profile import coverage_warning, tokenizer_coverage
from pipeline.stats import (
    accuracy,
    expected_calibration_error,
    fit_temperature,
    macro_f1_fn,
    metric_ci,
    paired_comparison,
    reliability_table,
    softmax,
)

log = logging.getLogger(__name__)

TRANSFORMERS = ("teacher", "student")
ONNX_NAME = "student_onnx"  # the int8 ONNX student from the export stage
PACKAGED = {ONNX_NAME: "student-onnx"}  # models/<folder> of each model
ROUNDS = 3


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".skops"))


def measure_speed(predictors: dict[str, Callable[[list[str]], Any]], texts: list[str], p: EvaluateParams) -> dict:
    """Throughput (samples/s, batch `p.batch_size`) and median latency (ms, batch 1), interleaved per round.

    Every model runs with denormal floats flushed to zero, as the ONNX models set it anyway: torch and onnxruntime
    are timed in the same CPU mode."""
    from pipeline.onnx_model import flush_denormals

    flush_denormals()
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


def transformer_predictor(model: Any, tokenizer: Any, max_length: int, truncation: str = "head"
                          ) -> Callable[[list[str]], Any]:
    import torch

    model = model.to("cpu").eval()

    def predict(texts: list[str]) -> Any:
        texts = read_texts(texts, tokenizer, max_length, truncation)
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits

    return predict


def calibration_note(cal: dict) -> str:
    if "temperature" in cal:
        return (f"expected calibration error {cal['ece']:.4f} on test (before temperature scaling "
                f"{cal['ece_before_scaling']:.4f}). The classification layer of this packaged model is divided by "
                f"T = {cal['temperature']} (fitted on validation; `calibration_temperature` in config.json), so its "
                "probabilities are the scaled ones and its predicted labels are unchanged.")
    return f"expected calibration error {cal.get('ece', float('nan')):.4f} on test (not rescaled)."


def _ci(m: dict) -> str:
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def model_card(name: str, folder: Path, metrics: dict, lineage: dict, label_names: list[str],
               speed: dict, verdicts: list[str], worst: list[str], example: str, notes: list[str] = ()) -> str:
    base = lineage.get("base_model") or lineage.get("teacher") or ""
    library = {"baseline": "sklearn", ONNX_NAME: "onnx"}.get(name, "transformers")
    front = ["---", "library_name: " + library,
             "pipeline_tag: text-classification", "tags: [finetune-pipeline, dvc]"]
    if base and name == "teacher":
        front.append(f"base_model: {base}")
    front.append("---")
    how = {
        "teacher": f"Fine-tuned from `{base}` with `transformers.Trainer` by the `train` stage.",
        "student": f"Distilled from the teacher (`{base}`) by the `distill` stage.",
        "baseline": "TF-IDF + logistic regression (scikit-learn) by the `baseline` stage.",
        ONNX_NAME: "The distilled student exported to ONNX and quantised to int8 (onnxruntime dynamic quantisation) "
                   "by the `export` stage; parity with the torch student was checked on every test row "
                   "(`metrics/export.json`).",
    }[name]
    if name == ONNX_NAME:
        use = (f'```bash\nfinetune predict --model {folder} --input new.csv --output scored.parquet\n'
               f'finetune serve --model {folder}   # POST /predict {{"texts": [...]}}\n```\n'
               f'```python\nfrom pipeline.onnx_model import OnnxClassifier\n'
               f'OnnxClassifier("{folder}").predict_proba([{example!r}])\n```')
        return _card(front, name, how, label_names, metrics, speed, verdicts, worst, lineage, use, notes)
    use = (f'```python\nfrom transformers import pipeline\nclf = pipeline("text-classification", model="{folder}")\n'
           f'clf({example!r})\n```' if name != "baseline" else
           f'```python\nfrom pipeline.modeling import load_baseline  # skops: loads no code from the file\n'
           f'clf = load_baseline("{folder}")\n'
           f'clf.predict([{example!r}])\n```')
    return _card(front, name, how, label_names, metrics, speed, verdicts, worst, lineage, use, notes)


def _card(front: list[str], name: str, how: str, label_names: list[str], metrics: dict, speed: dict,
          verdicts: list[str], worst: list[str], lineage: dict, use: str, notes: list[str] = ()) -> str:
    rows = "\n".join(f"| {lab} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                     for lab, v in metrics["per_class"].items())
    data = "\n".join(f"| {k} | `{v['path']}` | `{v['md5']}` |" for k, v in lineage.get("data", {}).items())
    return f"""{chr(10).join(front)}
# {name}

{how} Labels: {', '.join(label_names)}.
{chr(10) + "## Read this first" + chr(10) + chr(10).join("- " + n for n in notes) + chr(10) if notes else ""}
## Test metrics
| metric | value |
|---|---|
| accuracy [95% CI] | {_ci(metrics['accuracy_ci'])} |
| macro F1 [95% CI] | {_ci(metrics['macro_f1_ci'])} |
| weighted F1 | {metrics['weighted_f1']:.4f} |
| parameters | {metrics.get('parameters', 'n/a')} |
| size on disk (bytes) | {metrics['size_bytes']} |

CPU throughput and latency are machine figures, not properties of the model: they are in `metrics/speed.json`
(and `metrics/REPORT.md`), not here, so the same model always packages to the same bytes.

Confidence intervals: bootstrap over the test rows (BCa, seeded). Paired comparisons on the same test rows:
{chr(10).join('- ' + v for v in verdicts) or '- none'}

Weakest slices (lowest macro-F1 per slice column, at least 10 test rows; all in `metrics/slices.json`):
{chr(10).join('- ' + w for w in worst) or '- none'}

Calibration: {calibration_note(metrics.get('calibration', {}))}

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


def data_settings(lineage: dict) -> list[str]:
    """The settings a model's stage chose from the data (max_length, class weights, analyzer), in words."""
    r = lineage.get("resolved") or {}
    out = []
    if "max_length" in r:
        length = r.get("length", {})
        out.append(f"reads {r['max_length']} tokens per text (max_length {length.get('setting', '?')}; "
                   f"{length.get('truncated_rows', 0):.1%} of the training rows were cut, "
                   f"{length.get('tokens_not_read', 0):.1%} of their tokens not read)")
    cw = r.get("class_weights")
    if cw:
        out.append(f"class-weighted loss: {'on' if cw['used'] else 'off'} (class_weights {cw['setting']}, largest/"
                   f"smallest training class {cw['imbalance_ratio']:g})")
    if "analyzer" in r:
        out.append(f"TF-IDF analyzer: {r['analyzer']}")
    return out


def student_notes(name: str, lineage: dict, comparison: dict, min_ratio: float) -> list[str]:
    """How the shipped student was chosen (the validation evidence of each one tried) and, in plain words, whether
    it keeps the teacher's quality on the test rows."""
    notes = []
    kept = comparison.get("macro_f1_retained")
    search = lineage.get("student_search") or {}
    if kept is not None and kept < min_ratio:
        shapes = ", ".join(t["key"] for t in search.get("tried", [])) or "distill's own"
        notes.append(f"**This {name.replace('_', ' ')} keeps {kept:.1%} of the teacher's test macro-F1, under the "
                     f"{min_ratio:.0%} the pipeline aims for**: no student of the shapes tried ({shapes}) was shown "
                     f"to keep it (macro-F1 difference {comparison['delta']:+.4f} [{comparison['ci_low']:+.4f}, "
                     f"{comparison['ci_high']:+.4f}]). Use the teacher where that matters, or try larger students "
                     "(distill.layers).")
    for t in search.get("tried", []):
        ev = t.get("evidence")
        if not ev:
            continue
        notes.append(f"student tried `{t['key']}` (layers {t.get('layers')}): validation macro-F1 {ev['ratio']:.1%} "
                     f"of the teacher's, {100 * ev['confidence']:.0f}% lower bound {ev['ratio_lower']:.1%} on "
                     f"{ev['rows']} rows (needs {ev['min_ratio']:.0%}), classes significantly worse: "
                     f"{', '.join(ev['classes_worse']) or 'none'} -> {'shipped' if t.get('shipped') else 'rejected'}")
    return notes


def package(name: str, src: Path, dest: Path, card: str, lineage: dict, temperature: float | None = None) -> None:
    """Copy a trained model into models/ with its card and lineage (raw and test files added); with a temperature,
    its classification layer is divided by it, so every consumer (transformers.pipeline included) gets calibrated
    probabilities with unchanged argmax."""
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(FP32_FILE))
        if temperature is not None and name == ONNX_NAME:
            # The graph stays as exported (parity was checked on it); OnnxClassifier divides logits by this.
            cfg = json.loads((tmp / "config.json").read_text())
            cfg["calibration_temperature"] = temperature
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        elif temperature is not None:
            scale_classifier(tmp, temperature)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / "lineage.json").write_text(json.dumps({**lineage, "model": name, "temperature": temperature}, indent=2,
                                                   sort_keys=True) + "\n")


def prediction_table(test: pd.DataFrame, probs: dict[str, np.ndarray], label_names: list[str]) -> pd.DataFrame:
    """Per test row and model: the prediction and each class's probability (as packaged: calibrated), so
    `lineage diff` can compare two revisions' predictions row by row."""
    cols = [c for c in ("id", "raw_row", "label") if c in test.columns]
    parts = []
    for name, prob in probs.items():
        part = test[cols].copy()
        part.insert(0, "model", name)
        part["prediction"] = [label_names[i] for i in prob.argmax(1)]
        part["confidence"] = prob.max(1).round(6)
        for i, lab in enumerate(label_names):
            part[f"p_{lab}"] = prob[:, i].round(6)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def scale_classifier(folder: Path, temperature: float) -> None:
    import torch

    model = load_classifier(str(folder), str(folder))
    n = model.config.num_labels
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n]
    if not heads:
        raise RuntimeError(f"{folder}: no linear layer with {n} outputs to scale by the temperature")
    with torch.no_grad():  # logits = W h + b, so (W / T) h + b / T = logits / T exactly
        heads[-1].weight.div_(temperature)
        if heads[-1].bias is not None:
            heads[-1].bias.div_(temperature)
    model.config.calibration_temperature = temperature
    model.save_pretrained(folder, safe_serialization=True)


def slice_metrics(test: pd.DataFrame, preds: dict[str, np.ndarray], y: np.ndarray, label_names: list[str],
                  columns: list[str]) -> dict:
    """Per slice (each value of each kept column, and text-length quartiles): support, accuracy, macro-F1."""
    lengths = test["text"].str.len()
    edges = np.unique(np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0]).round())
    groups = {"text_length": pd.cut(lengths, edges, include_lowest=True, duplicates="drop").astype(str)}
    for c in columns:
        if c in test.columns:
            groups[c] = test[c].astype(object).where(test[c].notna(), "(missing)").astype(str)
    out: dict[str, dict] = {}
    for col, values in groups.items():
        out[col] = {}
        for value in sorted(values.unique()):
            m = (values == value).to_numpy()
            out[col][value] = {"support": int(m.sum()), "per_class": {
                label_names[k]: int(v) for k, v in zip(*np.unique(y[m], return_counts=True))}}
            for name, pred in preds.items():
                # Macro-F1 over the classes present in the slice (true or predicted): a slice of short texts with
                # no spam in it should not score 0.5 for a model that gets every row right.
                present = sorted(set(y[m]) | set(pred[m]))
                out[col][value][name] = {
                    "accuracy": round(float(np.mean(y[m] == pred[m])), 4),
                    "macro_f1": round(float(f1_score(y[m], pred[m], labels=present, average="macro",
                                                     zero_division=0)), 4)}
    return out


def worst_slices(slices: dict, model: str, min_support: int = 10) -> list[str]:
    """Per slice column, the slice (with at least min_support rows) where `model` has its lowest macro-F1."""
    lines = []
    for col, values in slices.items():
        cands = [(v[model]["macro_f1"], k) for k, v in values.items() if v["support"] >= min_support]
        if cands:
            f1, k = min(cands)
            # The class counts say how much to trust it: one spam row in a slice makes its macro-F1 all or nothing.
            counts = ", ".join(f"{c} {n}" for c, n in values[k].get("per_class", {}).items())
            lines.append(f"{col} = {k}: macro-F1 {f1:.4f} on {values[k]['support']} rows ({counts})")
    return lines


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "test", "val", "teacher", "student", "baseline", "metrics", "speed",
                      "slices", "report", "plots_dir", "misclassified", "models_dir", "raw", "predictions", "onnx",
                      argv=argv)
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
    val = read_table(args.val)
    y_val = val["label"].map(to_id).to_numpy()

    results: dict[str, dict] = {}
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    probs: dict[str, np.ndarray] = {}
    raw_probs: dict[str, np.ndarray] = {}
    temperatures: dict[str, float] = {}
    predictors: dict[str, Callable] = {}
    for name in TRANSFORMERS:
        model, tok = load_classifier(str(dirs[name]), name), load_tokenizer(str(dirs[name]), name)
        max_length, truncation = lineage_max_length(lineage[name]), lineage_truncation(lineage[name])
        logits = predict_logits(model, tok, texts, p.batch_size, max_length, device="cpu", progress=False,
                                truncation=truncation)
        prob = softmax(logits)
        probs[name] = raw_probs[name] = prob
        if p.calibrate:
            # Temperature scaling, fitted on validation (never on test): argmax and so every label metric are
            # unchanged; only the probabilities move.
            val_logits = predict_logits(model, tok, val["text"].tolist(), p.batch_size, max_length, device="cpu",
                                        progress=False, truncation=truncation)
            temperatures[name] = round(fit_temperature(val_logits, y_val), 4)
            probs[name] = softmax(logits / temperatures[name])
        preds[name] = (prob.argmax(1), probs[name].max(1))
        results[name] = {**classification_metrics(y, preds[name][0], label_names),
                         "parameters": int(sum(x.numel() for x in model.parameters())),
                         "size_bytes": dir_size(dirs[name])}
        predictors[name] = transformer_predictor(model, tok, max_length, truncation)
    baseline = load_baseline(dirs["baseline"])
    bprob = baseline.predict_proba(texts)
    preds["baseline"] = (bprob.argmax(1), bprob.max(1))
    probs["baseline"] = bprob
    results["baseline"] = {**classification_metrics(y, preds["baseline"][0], label_names),
                           "size_bytes": dir_size(dirs["baseline"])}
    predictors["baseline"] = baseline.predict_proba

    # The exported int8 student (export stage), judged like the others: what a deployment actually serves.
    onnx_dir = Path(args.onnx) / "student"
    onnx = OnnxClassifier(onnx_dir, threads=p.num_threads)
    logits = onnx.logits(texts, p.batch_size)
    raw_probs[ONNX_NAME] = probs[ONNX_NAME] = softmax(logits)
    if p.calibrate:
        temperatures[ONNX_NAME] = round(fit_temperature(onnx.logits(val["text"].tolist(), p.batch_size), y_val), 4)
        probs[ONNX_NAME] = softmax(logits / temperatures[ONNX_NAME])
    preds[ONNX_NAME] = (logits.argmax(1), probs[ONNX_NAME].max(1))
    results[ONNX_NAME] = {**classification_metrics(y, preds[ONNX_NAME][0], label_names),
                          "size_bytes": (onnx_dir / ONNX_FILE).stat().st_size}
    predictors[ONNX_NAME] = lambda batch: onnx.logits(batch, p.batch_size)
    dirs[ONNX_NAME] = onnx_dir
    lineage[ONNX_NAME] = json.loads((onnx_dir / "lineage.json").read_text())

    metric = macro_f1_fn(len(label_names))
    boot = dict(n_resamples=p.bootstrap_resamples, confidence=p.confidence, seed=params.seed)
    for name, (pred, _) in preds.items():
        results[name]["macro_f1_ci"] = metric_ci(y, pred, metric, **boot)
        results[name]["accuracy_ci"] = metric_ci(y, pred, accuracy, **boot)
    calibration: dict[str, pd.DataFrame] = {}
    for name, prob in probs.items():
        cal = {"ece": round(expected_calibration_error(y, prob, p.calibration_bins), 4)}
        if name in temperatures:
            cal.update(temperature=temperatures[name],
                       ece_before_scaling=round(expected_calibration_error(y, raw_probs[name], p.calibration_bins), 4))
        results[name]["calibration"] = cal
        calibration[name] = pd.DataFrame(reliability_table(y, prob, p.calibration_bins),
                                         columns=["bin", "confidence", "accuracy", "count"])
    slices = slice_metrics(test, {k: v[0] for k, v in preds.items()}, y, label_names, params.clean.keep_columns)
    comparisons = {
        f"{a}_vs_{b}": paired_comparison(y, preds[a][0], preds[b][0], metric, name_a=a, name_b=b, **boot)
        for a, b in (("teacher", "baseline"), ("student", "teacher"), ("student", "baseline"),
                     (ONNX_NAME, "student"), (ONNX_NAME, "teacher"))
    }
    t, s = results["teacher"], results["student"]
    retained = round(s["macro_f1"] / t["macro_f1"], 4) if t["macro_f1"] else 0.0
    comparisons["student_vs_teacher"]["macro_f1_retained"] = retained
    verdicts = {k: c.pop("verdict") for k, c in comparisons.items()}
    for c in comparisons.values():
        c["significant"] = int(c["significant"])  # numbers only: dvc metrics diff compares numbers
    results["comparisons"] = comparisons

    log.info("timing CPU inference (%d rounds, interleaved)", ROUNDS)
    speed: dict[str, dict] = {name: {**v, "batch_size": p.batch_size} for name, v in
                              measure_speed(predictors, texts, p).items()}
    ts = speed["teacher"]
    for name in ("student", ONNX_NAME):
        ss = speed[name]
        speed[f"{name}_vs_teacher"] = {
            "throughput_speedup": round(ss["cpu_samples_per_s_batch"] / ts["cpu_samples_per_s_batch"], 3),
            "latency_speedup": round(ts["cpu_latency_ms_batch1"] / ss["cpu_latency_ms_batch1"], 3),
            "size_ratio": round(results[name]["size_bytes"] / t["size_bytes"], 3),
        }
    comparisons[f"{ONNX_NAME}_vs_teacher"]["macro_f1_retained"] = (
        round(results[ONNX_NAME]["macro_f1"] / t["macro_f1"], 4) if t["macro_f1"] else 0.0)

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
    for name, table in calibration.items():
        write_csv(table, plots / f"calibration_{name}.csv")
    write_table(prediction_table(test, probs, label_names), args.predictions)
    write_json(results, args.metrics)
    write_json(speed, args.speed)
    write_json(slices, args.slices)
    coverage = coverage_warning(tokenizer_coverage(load_tokenizer(str(dirs["teacher"]), "teacher"), texts),
                                lineage["teacher"].get("base_model", "the teacher"))
    write_text(report(results, speed, verdicts, len(test), slices,
                      data_notes(comparisons, len(test), lineage, coverage)), args.report)
    # The raw file and the test split are part of each packaged model's lineage (card and lineage.json).
    evaluated = {"raw": {"path": args.raw, "md5": file_md5(args.raw)}, "test": {"path": args.test,
                                                                             "md5": file_md5(args.test)}}
    fetched = source_record(args.raw)  # a Hub dataset's pinned revision (finetune fetch), if that is the source
    if fetched:
        evaluated["raw"]["fetched_from"] = fetched
    for name, d in dirs.items():
        dest = Path(args.models_dir) / PACKAGED.get(name, name)
        mine = [v for k, v in verdicts.items() if name in k.split("_vs_")]
        # The clean params travel with the model: predict/serve normalise text exactly as training data was.
        lin = {**lineage[name], "data": {**evaluated, **lineage[name].get("data", {})},
               "clean": as_dict(params.clean)}
        source = lineage["student"] if name in ("student", ONNX_NAME) else lineage[name]
        notes = data_settings(source)
        if name in ("student", ONNX_NAME):
            notes = student_notes(name, source, comparisons[f"{name}_vs_teacher"],
                                  params.distill.min_val_f1_ratio) + notes
        if coverage and name != "baseline":
            notes.append(coverage)
        card = model_card(name, dest, results[name], lin, label_names, speed[name], mine,
                          worst_slices(slices, name), test["text"].iloc[0], notes)
        package(name, d, dest, card, lin, temperatures.get(name))
    for v in verdicts.values():
        log.info("%s", v)
    log.info("student keeps %.1f%% of the teacher's macro-F1 at %.2fx throughput",
             100 * comparisons["student_vs_teacher"]["macro_f1_retained"],
             speed["student_vs_teacher"]["throughput_speedup"])


SMALL_TEST = 1000  # below this many test rows, say in words what the comparisons cannot tell


def data_notes(comparisons: dict, n_test: int, lineage: dict, coverage: str | None) -> list[str]:
    """REPORT.md's plain-words section: what each model chose from the data, which comparisons the test rows
    cannot settle (a small test split), and a tokenizer that does not cover the language."""
    lines = [f"- {name}: " + "; ".join(data_settings(lineage[name])) for name in ("teacher", "student", "baseline")
             if data_settings(lineage[name])]
    for key, c in comparisons.items():
        disagree = c["mcnemar"]["a_right_b_wrong"] + c["mcnemar"]["a_wrong_b_right"]
        if c["significant"] or n_test >= SMALL_TEST or not disagree:  # no disagreement: nothing left to tell
            continue
        a, b = key.split("_vs_")
        lines.append(f"- The {n_test} test rows cannot tell {a} from {b}: their macro-F1 difference is somewhere in "
                     f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (95% CI). A wider test split, or more data, is what "
                     "would settle it; the point figures alone do not.")
    search = lineage["student"].get("student_search") or {}
    for t in search.get("tried", []):
        ev = t.get("evidence")
        if ev:
            lines.append(f"- distill tried `{t['key']}`: {ev['ratio']:.1%} of the teacher's validation macro-F1, lower "
                         f"bound {ev['ratio_lower']:.1%} ({100 * ev['confidence']:.0f}%, {ev['rows']} rows), classes "
                         f"worse: {', '.join(ev['classes_worse']) or 'none'} -> "
                         f"{'shipped' if t.get('shipped') else 'rejected'}")
    if coverage:
        lines.append(f"- Language: {coverage}")
    return lines


def report(results: dict, speed: dict, verdicts: dict[str, str], n_test: int, slices: dict,
           notes: list[str] = ()) -> str:
    """metrics/REPORT.md: what `dvc metrics show` cannot print readably — one row per model, then the verdicts."""
    rows, weak = [], []
    for name in ("teacher", "student", ONNX_NAME, "baseline"):
        r, sp = results[name], speed[name]
        cal = r["calibration"]
        ece = f"{cal['ece']:.4f}" + (f" (T={cal['temperature']:.2f}; {cal['ece_before_scaling']:.4f} before)"
                                     if "temperature" in cal else "")
        rows.append(f"| {name} | {_ci(r['macro_f1_ci'])} | {_ci(r['accuracy_ci'])} | {ece} | "
                    f"{sp['cpu_samples_per_s_batch']:.0f} | {sp['cpu_latency_ms_batch1']:.1f} | "
                    f"{r['size_bytes'] / 2**20:.1f} MiB |")
        weak += [f"- {name}: {w}" for w in worst_slices(slices, name)]
    return "\n".join([
        f"# Test results ({n_test} test rows)", "",
        "| model | macro-F1 [95% CI] | accuracy [95% CI] | ECE | CPU samples/s (batch 32) | CPU latency ms "
        "(batch 1) | size |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Paired comparisons on the same test rows (bootstrap CI of the difference, McNemar exact test):", "",
        *[f"- {v}" for v in verdicts.values()], "",
        "Weakest slice per column (lowest macro-F1, >= 10 rows; every slice in `metrics/slices.json`):", "",
        *weak, "",
        *(["What the data decided, and what it cannot tell:", "", *notes, ""] if notes else []),
        "Speeds are CPU figures of this run's machine (`metrics/speed.json`); quality figures are in "
        "`metrics/eval.json`.",
        "",
    ])


if __name__ == "__main__":
    run_stage(main)
