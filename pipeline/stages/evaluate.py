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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from pipeline.core.blend import blend
from pipeline.core.engine import engine_for
from pipeline.core.io import (
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
from pipeline.core.modeling import classification_metrics, load_classifier, load_tokenizer
from pipeline.core.onnx_model import FP32_FILE, ONNX_FILE
from pipeline.core.params import EvaluateParams, as_dict, load_params
from pipeline.core.profile import coverage_warning, tokenizer_coverage
from pipeline.core.provenance import source_record
from pipeline.core.scoring import Scorer
from pipeline.core.stats import (
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
    from pipeline.core.onnx_model import flush_denormals

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
               f'```python\nfrom pipeline.core.onnx_model import OnnxClassifier\n'
               f'OnnxClassifier("{folder}").predict_proba([{example!r}])\n```')
        return _card(front, name, how, label_names, metrics, speed, verdicts, worst, lineage, use, notes)
    use = (f'```python\nfrom transformers import pipeline\nclf = pipeline("text-classification", model="{folder}")\n'
           f'clf({example!r})\n```' if name != "baseline" else
           f'```python\nfrom pipeline.core.modeling import load_baseline  # skops: loads no code from the file\n'
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
    targets = lineage.get("teacher_targets") or {}
    if targets.get("baseline_weight"):
        out.append(f"learned from the teacher blended with the TF-IDF baseline (baseline weight "
                   f"{targets['baseline_weight']:g}, distill.blend_baseline {targets.get('setting')})")
    return out


def student_notes(name: str, lineage: dict, comparison: dict, min_ratio: float, ref: str = "teacher") -> list[str]:
    """How the shipped student was chosen (the validation evidence of each one tried) and, in plain words, whether
    it keeps the teacher's quality on the test rows."""
    notes = []
    kept = comparison.get("macro_f1_retained")
    search = lineage.get("student_search") or {}
    if kept is not None and kept < min_ratio:
        shapes = ", ".join(t["key"] for t in search.get("tried", [])) or "distill's own"
        whose = "the teacher's" if ref == "teacher" else "the teacher-and-baseline blend's (what it learned from)"
        instead = ("Use the teacher where that matters" if ref == "teacher" else
                   "Where that matters, use the baseline or a model of the text's language (train.model)")
        notes.append(f"**This {name.replace('_', ' ')} keeps {kept:.1%} of {whose} test macro-F1, under the "
                     f"{min_ratio:.0%} the pipeline aims for**: no student of the shapes tried ({shapes}) was shown "
                     f"to keep it (macro-F1 difference {comparison['delta']:+.4f} [{comparison['ci_low']:+.4f}, "
                     f"{comparison['ci_high']:+.4f}]). {instead}, or try larger students (distill.layers).")
    reference = "the teacher's" if not (lineage.get("teacher_targets") or {}).get("baseline_weight") else "its targets'"
    for t in search.get("tried", []):
        ev = t.get("evidence")
        if not ev:
            continue
        notes.append(f"student tried `{t['key']}` (layers {t.get('layers')}): validation macro-F1 {ev['ratio']:.1%} "
                     f"of {reference}, {100 * ev['confidence']:.0f}% lower bound {ev['ratio_lower']:.1%} on "
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


@dataclass
class Scored:
    """One model's test-row output: labels, raw and (where calibrated) scaled probabilities, and what timing needs."""

    pred: np.ndarray
    prob: np.ndarray  # as packaged: temperature-scaled where calibrated
    raw_prob: np.ndarray
    temperature: float | None
    predictor: Callable[[list[str]], Any]
    metrics: dict


def score(name: str, folder: Path, texts: list[str], val_texts: list[str], y: np.ndarray, y_val: np.ndarray,
          label_names: list[str], p: EvaluateParams, size_bytes: int, engine: Any = None) -> Scored:
    """Score one model (any kind, through `Scorer`, on `engine` if given: the same numbers) on the test rows;
    transformer and ONNX models get a temperature fitted on the validation rows (never on test): argmax, and so
    every label metric, is unchanged by it."""
    scorer = Scorer(folder, threads=p.num_threads, engine=engine)
    temperature = None
    if scorer.kind == "baseline":
        prob = raw = scorer.proba(texts, p.batch_size, dtype=np.float64)  # scikit-learn's own precision
    else:
        logits = scorer.logits(texts, p.batch_size)
        prob = raw = softmax(logits)
        if p.calibrate:
            temperature = round(fit_temperature(scorer.logits(val_texts, p.batch_size), y_val), 4)
            prob = softmax(logits / temperature)
    pred = raw.argmax(1)
    metrics = {**classification_metrics(y, pred, label_names), "size_bytes": size_bytes}
    if scorer.kind == "transformers":
        metrics["parameters"] = scorer.parameters
    log.info("%s: test macro-F1 %.4f", name, metrics["macro_f1"])
    return Scored(pred, prob, raw, temperature, scorer.predictor(p.batch_size), metrics)


def add_uncertainty(scored: dict[str, Scored], y: np.ndarray, p: EvaluateParams, seed: int, metric: Callable
                    ) -> dict[str, pd.DataFrame]:
    """Bootstrap CIs of macro-F1 and accuracy, calibration error (before and after scaling) per model, into its
    metrics; returns the reliability tables for `dvc plots`."""
    boot = dict(n_resamples=p.bootstrap_resamples, confidence=p.confidence, seed=seed)
    tables = {}
    for name, s in scored.items():
        s.metrics["macro_f1_ci"] = metric_ci(y, s.pred, metric, **boot)
        s.metrics["accuracy_ci"] = metric_ci(y, s.pred, accuracy, **boot)
    for name, s in scored.items():
        cal = {"ece": round(expected_calibration_error(y, s.prob, p.calibration_bins), 4)}
        if s.temperature is not None:
            cal.update(temperature=s.temperature,
                       ece_before_scaling=round(expected_calibration_error(y, s.raw_prob, p.calibration_bins), 4))
        s.metrics["calibration"] = cal
        tables[name] = pd.DataFrame(reliability_table(y, s.prob, p.calibration_bins),
                                    columns=["bin", "confidence", "accuracy", "count"])
    return tables


PAIRS = (("teacher", "baseline"), ("student", "teacher"), ("student", "baseline"), (ONNX_NAME, "student"),
         (ONNX_NAME, "teacher"))
BLEND = "teacher_blend"  # the student's targets when distill blended the teacher with the baseline
BLEND_PAIRS = ((BLEND, "baseline"), (BLEND, "teacher"), ("student", BLEND), (ONNX_NAME, BLEND))


def blended(scored: dict[str, Scored], record: dict, y: np.ndarray, label_names: list[str]) -> Scored | None:
    """What the student learned from, scored on the test rows: the teacher's and the baseline's test
    probabilities blended with the weight teacher_logits chose on validation rows; None when it chose none."""
    w = record.get("baseline_weight", 0.0)
    if not w:
        return None
    t, b = scored["teacher"], scored["baseline"]
    prob = softmax(blend(np.log(np.clip(t.raw_prob, 1e-30, 1.0)), b.raw_prob, w).astype(np.float64))
    pred = prob.argmax(1)
    size = t.metrics["size_bytes"] + b.metrics["size_bytes"]
    log.info("%s (baseline weight %g): test macro-F1 %.4f", BLEND, w, classification_metrics(y, pred, label_names)
             ["macro_f1"])
    return Scored(pred, prob, prob, None, None, {**classification_metrics(y, pred, label_names), "size_bytes": size,
                                                 "baseline_weight": w})


def compare(scored: dict[str, Scored], y: np.ndarray, p: EvaluateParams, seed: int, metric: Callable,
            label_names: list[str]) -> tuple[dict, dict[str, str]]:
    """Paired comparisons on the same test rows (CI of the macro-F1 difference, McNemar), the share of the
    teacher's macro-F1 each student keeps, and the verdicts in words."""
    boot = dict(n_resamples=p.bootstrap_resamples, confidence=p.confidence, seed=seed)
    pairs = PAIRS + (BLEND_PAIRS if BLEND in scored else ())
    comparisons = {f"{a}_vs_{b}": paired_comparison(y, scored[a].pred, scored[b].pred, metric, name_a=a, name_b=b,
                                                    **boot) for a, b in pairs}
    for a, b in pairs:
        c = comparisons[f"{a}_vs_{b}"]
        small = small_class_check(y, scored[a].pred, scored[b].pred, label_names, boot) if c["significant"] else None
        if small:
            c["small_classes"] = small
    for ref in ("teacher", BLEND) if BLEND in scored else ("teacher",):
        ref_f1 = scored[ref].metrics["macro_f1"]
        for name in ("student", ONNX_NAME):
            kept = round(scored[name].metrics["macro_f1"] / ref_f1, 4) if ref_f1 else 0.0
            comparisons[f"{name}_vs_{ref}"]["macro_f1_retained"] = kept
    verdicts = {k: c.pop("verdict") for k, c in comparisons.items()}
    for c in comparisons.values():
        c["significant"] = int(c["significant"])  # numbers only: dvc metrics diff compares numbers
    return comparisons, verdicts


SMALL_CLASS = 10  # test rows: a class with fewer has its F1 decided by one or two rows


def small_class_check(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, label_names: list[str], boot: dict
                      ) -> dict | None:
    """A significant macro-F1 difference that rests on classes with under SMALL_CLASS test rows: the same paired
    comparison averaged over the other classes is no longer significant. Then: that comparison, and the F1 of each
    side on the small classes where they differ (what REPORT.md puts in words). None when the verdict does not
    rest on them, or there are too few larger classes to say."""
    n = len(label_names)
    support = np.bincount(np.asarray(y, dtype=np.int64), minlength=n)
    big, small = np.flatnonzero(support >= SMALL_CLASS), np.flatnonzero(support < SMALL_CLASS)
    if len(small) == 0 or len(big) < 2:
        return None
    rest = paired_comparison(y, pred_a, pred_b, macro_f1_fn(n, classes=big), **boot)
    if rest["significant"]:
        return None
    f1 = [f1_score(y, pred, labels=list(range(n)), average=None, zero_division=0) for pred in (pred_a, pred_b)]
    return {"classes": len(big), "delta": rest["delta"], "ci_low": rest["ci_low"], "ci_high": rest["ci_high"],
            "significant": 0,
            "differing": {label_names[k]: {"rows": int(support[k]), "f1_a": round(float(f1[0][k]), 4),
                                           "f1_b": round(float(f1[1][k]), 4)}
                          for k in small if abs(f1[0][k] - f1[1][k]) > 1e-9}}


def speeds(scored: dict[str, Scored], texts: list[str], p: EvaluateParams) -> dict:
    """CPU throughput and latency of every model, timed interleaved, and each student's ratios to the teacher."""
    log.info("timing CPU inference (%d rounds, interleaved)", ROUNDS)
    speed = {name: {**v, "batch_size": p.batch_size}
             for name, v in measure_speed({k: s.predictor for k, s in scored.items() if s.predictor}, texts,
                                          p).items()}
    ts, size = speed["teacher"], scored["teacher"].metrics["size_bytes"]
    for name in ("student", ONNX_NAME):
        ss = speed[name]
        speed[f"{name}_vs_teacher"] = {
            "throughput_speedup": round(ss["cpu_samples_per_s_batch"] / ts["cpu_samples_per_s_batch"], 3),
            "latency_speedup": round(ts["cpu_latency_ms_batch1"] / ss["cpu_latency_ms_batch1"], 3),
            "size_ratio": round(scored[name].metrics["size_bytes"] / size, 3),
        }
    return speed


def write_rows(test: pd.DataFrame, scored: dict[str, Scored], y: np.ndarray, label_names: list[str],
               tables: dict[str, pd.DataFrame], args: Any, p: EvaluateParams) -> None:
    """Per-row outputs: confusion and reliability sources for `dvc plots`, the misclassified rows, and every
    model's test predictions (for `lineage diff`)."""
    plots = Path(args.plots_dir)
    wrong = []
    for name, s in scored.items():
        if name != BLEND:  # dvc.yaml's plots are the four models'; the blend's rows are in the predictions table
            write_csv(pd.DataFrame({"actual": test["label"], "predicted": [label_names[i] for i in s.pred]}),
                      plots / f"confusion_{name}.csv")
        miss = s.pred != y
        wrong.append(pd.DataFrame({"model": name, "id": test["id"][miss], "label": test["label"][miss],
                                   "predicted": [label_names[i] for i in s.pred[miss]],
                                   "confidence": s.prob.max(1)[miss].round(4), "text": test["text"][miss]}))
    wrong_df = pd.concat(wrong, ignore_index=True).sort_values(["model", "confidence"], ascending=[True, False])
    write_csv(wrong_df.groupby("model", sort=False).head(p.max_misclassified), args.misclassified)
    for name, table in tables.items():
        if name != BLEND:
            write_csv(table, plots / f"calibration_{name}.csv")
    write_table(prediction_table(test, {k: s.prob for k, s in scored.items()}, label_names), args.predictions)


def package_all(scored: dict[str, Scored], dirs: dict[str, Path], lineage: dict, comparisons: dict,
                verdicts: dict[str, str], slices: dict, speed: dict, coverage: str | None, example: str,
                label_names: list[str], params: Any, args: Any) -> None:
    """models/<name>/: each model with its card and lineage (the raw and test files, and the clean params that
    predict/serve normalise text with, added)."""
    evaluated = {"raw": {"path": args.raw, "md5": file_md5(args.raw)},
                 "test": {"path": args.test, "md5": file_md5(args.test)}}
    fetched = source_record(args.raw)  # a Hub dataset's pinned revision (finetune fetch), if that is the source
    if fetched:
        evaluated["raw"]["fetched_from"] = fetched
    for name, d in dirs.items():
        dest = Path(args.models_dir) / PACKAGED.get(name, name)
        mine = [v for k, v in verdicts.items() if name in k.split("_vs_")]
        lin = {**lineage[name], "data": {**evaluated, **lineage[name].get("data", {})},
               "clean": as_dict(params.clean)}
        source = lineage["student"] if name in ("student", ONNX_NAME) else lineage[name]
        notes = data_settings(source)
        if name in ("student", ONNX_NAME):  # judged against what it learned from: the blend, when there is one
            ref = BLEND if f"{name}_vs_{BLEND}" in comparisons else "teacher"
            notes = student_notes(name, source, comparisons[f"{name}_vs_{ref}"],
                                  params.distill.min_val_f1_ratio, ref) + notes
        if coverage and name != "baseline":
            notes.append(coverage)
        card = model_card(name, dest, scored[name].metrics, lin, label_names, speed[name], mine,
                          worst_slices(slices, name), example, notes)
        package(name, d, dest, card, lin, scored[name].temperature)


def model_folders(args: Any) -> tuple[dict[str, Path], dict[str, dict], list[str]]:
    """The four models' folders (the int8 ONNX student: what a deployment serves, judged like the others), their
    lineage, and the label names they must all share."""
    dirs = {"teacher": Path(args.teacher), "student": Path(args.student), "baseline": Path(args.baseline),
            ONNX_NAME: Path(args.onnx) / "student"}
    lineage = {k: json.loads((d / "lineage.json").read_text()) for k, d in dirs.items()}
    label_names = lineage["teacher"]["label_names"]
    for k, lin in lineage.items():
        if lin.get("label_names", label_names) != label_names:
            raise DataError(f"{dirs[k]}: labels {lin['label_names']} differ from the teacher's {label_names}")
    return dirs, lineage, label_names


def sizes(dirs: dict[str, Path]) -> dict[str, int]:
    return {k: (d / ONNX_FILE).stat().st_size if k == ONNX_NAME else dir_size(d) for k, d in dirs.items()}


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "test", "val", "teacher", "student", "baseline", "metrics", "speed",
                      "slices", "report", "plots_dir", "misclassified", "models_dir", "raw", "predictions", "onnx",
                      "blend", argv=argv)
    params = load_params(args.params)
    p = params.evaluate
    test, val = read_table(args.test), read_table(args.val)
    dirs, lineage, label_names = model_folders(args)
    unseen = sorted(set(test["label"]) - set(label_names))
    if unseen:
        raise DataError(f"{args.test}: label(s) {unseen} never seen in training {label_names}")
    to_id = {n: i for i, n in enumerate(label_names)}
    y, y_val = test["label"].map(to_id).to_numpy(), val["label"].map(to_id).to_numpy()
    texts = test["text"].tolist()
    size = sizes(dirs)
    engine = engine_for(params.inference)  # where the test and validation rows are scored: the same numbers
    try:
        scored = {name: score(name, dirs[name], texts, val["text"].tolist(), y, y_val, label_names, p, size[name],
                              engine) for name in ("teacher", "student", "baseline", ONNX_NAME)}
    finally:
        if engine is not None:
            engine.close()
    blend_record = json.loads(Path(args.blend).read_text())
    mixed = blended(scored, blend_record, y, label_names)
    if mixed is not None:
        scored[BLEND] = mixed
    metric = macro_f1_fn(len(label_names))
    tables = add_uncertainty(scored, y, p, params.seed, metric)
    slices = slice_metrics(test, {k: s.pred for k, s in scored.items()}, y, label_names, params.clean.keep_columns)
    comparisons, verdicts = compare(scored, y, p, params.seed, metric, label_names)
    results = {**{k: s.metrics for k, s in scored.items()}, "comparisons": comparisons}
    speed = speeds(scored, texts, p)

    write_rows(test, scored, y, label_names, tables, args, p)
    write_json(results, args.metrics)
    write_json(speed, args.speed)
    write_json(slices, args.slices)
    coverage = coverage_warning(tokenizer_coverage(load_tokenizer(str(dirs["teacher"]), "teacher"), texts),
                                lineage["teacher"].get("base_model", "the teacher"))
    write_text(report(results, speed, verdicts, len(test), slices,
                      data_notes(comparisons, len(test), lineage, coverage, blend_record)), args.report)
    package_all(scored, dirs, lineage, comparisons, verdicts, slices, speed, coverage, test["text"].iloc[0],
                label_names, params, args)
    for v in verdicts.values():
        log.info("%s", v)
    log.info("student keeps %.1f%% of the teacher's macro-F1 at %.2fx throughput",
             100 * comparisons["student_vs_teacher"]["macro_f1_retained"],
             speed["student_vs_teacher"]["throughput_speedup"])


SMALL_TEST = 1000  # below this many test rows, say in words what the comparisons cannot tell


def data_notes(comparisons: dict, n_test: int, lineage: dict, coverage: str | None,
               blend_record: dict | None = None) -> list[str]:
    """REPORT.md's plain-words section: what each model chose from the data, which comparisons the test rows
    cannot settle (a small test split), what the student learned from (teacher_blend.json's record: the student's
    lineage keeps only the weight), and a tokenizer that does not cover the language."""
    lines = [f"- {name}: " + "; ".join(data_settings(lineage[name])) for name in ("teacher", "student", "baseline")
             if data_settings(lineage[name])]
    for key, c in comparisons.items():
        disagree = c["mcnemar"]["a_right_b_wrong"] + c["mcnemar"]["a_wrong_b_right"]
        if c["significant"] or n_test >= SMALL_TEST or not disagree:  # no disagreement: nothing left to tell
            continue
        a, b = key.split("_vs_")
        lines.append(f"- The {n_test} test rows cannot tell {a} from {b}: their macro-F1 difference is somewhere in "
                     f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (95% CI). More data, or k disjoint test folds pooled "
                     "(`finetune kfold`), is what would settle it; the point figures alone do not.")
    for key, c in comparisons.items():
        small = c.get("small_classes")
        if not small:
            continue
        a, b = key.split("_vs_")
        each = "; ".join(f"{k} ({v['rows']} rows): F1 {v['f1_a']:.2f} vs {v['f1_b']:.2f}"
                         for k, v in small["differing"].items())
        disagree = c["mcnemar"]["a_right_b_wrong"] + c["mcnemar"]["a_wrong_b_right"]
        lines.append(f"- {a} vs {b}: the macro-F1 difference {c['delta']:+.4f} [{c['ci_low']:+.4f}, "
                     f"{c['ci_high']:+.4f}] rests on classes with under {SMALL_CLASS} test rows ({each}). Over the "
                     f"other {small['classes']} classes it is {small['delta']:+.4f} [{small['ci_low']:+.4f}, "
                     f"{small['ci_high']:+.4f}], not significant, and over the rows McNemar gives "
                     f"p={c['mcnemar']['p_value']:.3g} ({disagree} rows where exactly one is right). One or two rows "
                     "decide a class that small: more test rows of it (more data, or `finetune kfold`'s k test "
                     "folds pooled) are what would settle the comparison.")
    lines += blend_notes(blend_record or {})
    search = lineage["student"].get("student_search") or {}
    blended_in = (lineage["student"].get("teacher_targets") or {}).get("baseline_weight")
    for t in search.get("tried", []):
        ev = t.get("evidence")
        if ev:
            lines.append(f"- distill tried `{t['key']}`: {ev['ratio']:.1%} of "
                         f"{'the blend' if blended_in else 'the teacher'}'s validation macro-F1, lower "
                         f"bound {ev['ratio_lower']:.1%} ({100 * ev['confidence']:.0f}%, {ev['rows']} rows), classes "
                         f"worse: {', '.join(ev['classes_worse']) or 'none'} -> "
                         f"{'shipped' if t.get('shipped') else 'rejected'}")
    if coverage:
        lines.append(f"- Language: {coverage}")
    return lines


def blend_notes(record: dict) -> list[str]:
    """What the student learned from, in words: the teacher, or its blend with the baseline, and the evidence; with
    the blend off, whether `auto` would have taken the baseline in on these validation rows."""
    if not record or "grid" not in record:
        return []
    f1 = record.get("val_macro_f1", {})
    said = (f"log-loss gain {record['log_loss_gain']:+.4f} per row over the teacher alone, "
            f"{100 * record['confidence']:.0f}% lower bound {record['log_loss_gain_lower']:+.4f}, "
            f"{record['val_rows']} validation rows; validation macro-F1 teacher {f1.get('teacher', float('nan')):.4f}, "
            f"baseline {f1.get('baseline', float('nan')):.4f}")
    w, auto = record["baseline_weight"], record.get("auto_choice", 0.0)
    if w:
        return [f"- The student learned from the teacher blended with the TF-IDF baseline (baseline weight {w:g}, "
                f"distill.blend_baseline {record.get('setting')}; at weight {record['best_on_validation']:g}: {said}, "
                f"blend {f1.get('blend', float('nan')):.4f}). `{BLEND}` is that blend on the test rows."]
    if auto:
        return [f"- The student learned from the teacher alone (distill.blend_baseline {record.get('setting')}). On "
                f"these validation rows `auto` would blend the TF-IDF baseline in at weight {auto:g} ({said}). Off "
                "by default: on two non-English sets that moved the student by +0.05 and -0.05, neither significant "
                "(bench/results/BLEND.md)."]
    return []


def report(results: dict, speed: dict, verdicts: dict[str, str], n_test: int, slices: dict,
           notes: list[str] = ()) -> str:
    """metrics/REPORT.md: what `dvc metrics show` cannot print readably — one row per model, then the verdicts."""
    rows, weak = [], []
    for name in ("teacher", "student", ONNX_NAME, "baseline", BLEND):
        if name not in results:
            continue
        r, sp = results[name], speed.get(name)
        cal = r["calibration"]
        ece = f"{cal['ece']:.4f}" + (f" (T={cal['temperature']:.2f}; {cal['ece_before_scaling']:.4f} before)"
                                     if "temperature" in cal else "")
        timing = (f"{sp['cpu_samples_per_s_batch']:.0f} | {sp['cpu_latency_ms_batch1']:.1f}" if sp else
                  "not timed (teacher + baseline) | ")
        rows.append(f"| {name} | {_ci(r['macro_f1_ci'])} | {_ci(r['accuracy_ci'])} | {ece} | {timing} | "
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
