"""The sequence task's evaluate: teacher, student, baseline and int8 student on the test rows.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.core.blend import blend
from pipeline.core.cards import data_settings, model_card, package, student_notes, worst_slices
from pipeline.core.engine import engine_for
from pipeline.core.explain_report import explain_test, write_explanations
from pipeline.core.io import (
    file_md5,
    read_lineage,
    read_table,
    write_csv,
    write_json,
    write_table,
    write_text,
)
from pipeline.core.metrics import (
    accuracy,
    classification_metrics,
    encode_labels,
    macro_f1,
    macro_f1_fn,
    present_classes,
    require_same_labels,
    softmax,
)
from pipeline.core.modeling import load_tokenizer
from pipeline.core.names import BLEND, BLEND_PAIRS, ONNX_NAME, PACKAGED, PAIRS, STUDENTS
from pipeline.core.params import EvaluateParams, as_dict
from pipeline.core.profile import coverage_warning, tokenizer_coverage
from pipeline.core.provenance import source_record
from pipeline.core.report import data_notes, report
from pipeline.core.scoring import kind_of, open_model
from pipeline.core.speed import ROUNDS, measure_speed
from pipeline.core.stats import (
    expected_calibration_error,
    metric_ci,
    paired_comparison,
    reliability_table,
    small_class_check,
)

log = logging.getLogger(__name__)


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
                present = present_classes(y[m], pred[m])
                out[col][value][name] = {
                    "accuracy": round(accuracy(y[m], pred[m]), 4),
                    "macro_f1": round(macro_f1(y[m], pred[m], len(label_names), present), 4)}
    return out


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
    """Score one model (any kind, through `open_model`, on `engine` if given: the same numbers) on the test rows;
    transformer and ONNX models get a temperature fitted on the validation rows (never on test): argmax, and so
    every label metric, is unchanged by it."""
    scorer = open_model(folder, threads=p.num_threads, engine=engine)
    raw, prob, temperature = scorer.test_proba(texts, val_texts, y_val, p.batch_size, p.calibrate)
    pred = raw.argmax(1)
    metrics = {**classification_metrics(y, pred, label_names), "size_bytes": size_bytes}
    if scorer.parameters is not None:
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
        for name in STUDENTS:
            kept = round(scored[name].metrics["macro_f1"] / ref_f1, 4) if ref_f1 else 0.0
            comparisons[f"{name}_vs_{ref}"]["macro_f1_retained"] = kept
    verdicts = {k: c.pop("verdict") for k, c in comparisons.items()}
    for c in comparisons.values():
        c["significant"] = int(c["significant"])  # numbers only: dvc metrics diff compares numbers
    return comparisons, verdicts


def speeds(scored: dict[str, Scored], texts: list[str], p: EvaluateParams) -> dict:
    """CPU throughput and latency of every model, timed interleaved, and each student's ratios to the teacher."""
    log.info("timing CPU inference (%d rounds, interleaved)", ROUNDS)
    speed = {name: {**v, "batch_size": p.batch_size}
             for name, v in measure_speed({k: s.predictor for k, s in scored.items() if s.predictor}, texts,
                                          p).items()}
    ts, size = speed["teacher"], scored["teacher"].metrics["size_bytes"]
    for name in STUDENTS:
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
        source = lineage["student"] if name in STUDENTS else lineage[name]
        notes = data_settings(source)
        if name in STUDENTS:  # judged against what it learned from: the blend, when there is one
            ref = BLEND if f"{name}_vs_{BLEND}" in comparisons else "teacher"
            notes = student_notes(name, source, comparisons[f"{name}_vs_{ref}"],
                                  params.distill.min_val_f1_ratio, ref) + notes
        if coverage and kind_of(d).reads_tokens:
            notes.append(coverage)
        card = model_card(name, kind_of(d), dest, scored[name].metrics, lin, label_names, speed[name], mine,
                          worst_slices(slices, name), example, notes)
        package(name, d, dest, card, lin, scored[name].temperature)


def model_folders(args: Any) -> tuple[dict[str, Path], dict[str, dict], list[str]]:
    """The four models' folders (the int8 ONNX student: what a deployment serves, judged like the others), their
    lineage, and the label names they must all share."""
    dirs = {"teacher": Path(args.teacher), "student": Path(args.student), "baseline": Path(args.baseline),
            ONNX_NAME: Path(args.onnx) / "student"}
    lineage = {k: read_lineage(d) for k, d in dirs.items()}
    label_names = lineage["teacher"]["label_names"]
    for k, lin in lineage.items():
        require_same_labels(dirs[k], lin.get("label_names", label_names), label_names)
    return dirs, lineage, label_names


def sizes(dirs: dict[str, Path]) -> dict[str, int]:
    return {k: kind_of(d).size_bytes(d) for k, d in dirs.items()}


def evaluate_all(args: Any, params: Any) -> None:
    """The stage's work for the sequence task: score, compare, time, write, package."""
    p = params.evaluate
    test, val = read_table(args.test), read_table(args.val)
    dirs, lineage, label_names = model_folders(args)
    y, y_val = encode_labels(test["label"], label_names, args.test), encode_labels(val["label"], label_names, args.val)
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
    train = read_table(args.train)
    why = write_explanations(args, params, lambda rows: explain_test(
        open_model(dirs[ONNX_NAME]), open_model(dirs["teacher"]), test["text"].tolist(), test["label"].tolist(),
        train["text"].tolist(), train["label"].tolist(), rows))
    write_text(report(results, speed, verdicts, len(test), slices,
                      data_notes(comparisons, len(test), lineage, coverage, blend_record)) + "\n".join(why),
               args.report)
    package_all(scored, dirs, lineage, comparisons, verdicts, slices, speed, coverage, test["text"].iloc[0],
                label_names, params, args)
    for v in verdicts.values():
        log.info("%s", v)
    log.info("student keeps %.1f%% of the teacher's macro-F1 at %.2fx throughput",
             100 * comparisons["student_vs_teacher"]["macro_f1_retained"],
             speed["student_vs_teacher"]["throughput_speedup"])

