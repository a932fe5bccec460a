"""The token task's evaluate: teacher, student, int8 ONNX student and CRF baseline on the test sentences.

Entity F1 is seqeval's strict micro F1 (type and both boundaries), with a bootstrap CI over sentences, per type
precision/recall/F1, and the errors sorted the way NER people read them: a gold entity found with the wrong type,
found with the wrong boundaries, both, or missed; a predicted entity overlapping no gold one is spurious. Paired
comparisons (teacher vs CRF, student vs teacher, ...) resample the same sentences for both models. Speed is timed
interleaved, raw text in and entity spans out, as `serve` runs. Every output dvc.yaml declares for evaluate is
written, in the token task's terms: the confusion CSVs are of entity types per word, the reliability tables of each
word's tag confidence, the prediction table has one row per sentence and model with its entities.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.core.entities import EntityCounts, entity_counts, entity_f1_ci, entity_report, paired_entity_f1
from pipeline.core.explain_report import write_explanations
from pipeline.core.io import file_md5, read_table, write_csv, write_json, write_table, write_text
from pipeline.core.metrics import label_index, softmax
from pipeline.core.names import ONNX_NAME, PACKAGED, PAIRS, STUDENTS
from pipeline.core.params import as_dict
from pipeline.core.speed import measure_speed
from pipeline.core.stats import expected_calibration_error, reliability_table
from pipeline.core.tags import spans, split_tag
from pipeline.core.token_cards import package_token_model, student_note, token_report
from pipeline.core.token_explain_report import explain_token_test
from pipeline.core.token_scoring import CrfWordTagger, OnnxTagger, TorchTagger, WordTagger

log = logging.getLogger(__name__)
ERRORS = ("wrong_type", "wrong_span", "wrong_type_and_span", "missed", "spurious")


@dataclass
class TokenScored:
    tags: list[list[str]]
    probs: list[np.ndarray]  # per sentence [words, labels]
    counts: EntityCounts
    predictor: Callable[[list[str]], Any]
    metrics: dict


def error_kinds(gold: list[list[str]], pred: list[list[str]]) -> dict[str, int]:
    """Each gold entity not matched exactly, by what went wrong, and the predicted entities overlapping no gold."""
    out = dict.fromkeys(ERRORS, 0)
    for g, p in zip(gold, pred):
        gs, ps = spans(g), spans(p)
        exact = {(s.start, s.end, s.type) for s in ps}
        for e in gs:
            if (e.start, e.end, e.type) in exact:
                continue
            near = [s for s in ps if s.start < e.end and e.start < s.end]
            same_span = any(s.start == e.start and s.end == e.end for s in near)
            same_type = any(s.type == e.type for s in near)
            out["missed" if not near else "wrong_type" if same_span else "wrong_span" if same_type
                else "wrong_type_and_span"] += 1
        out["spurious"] += sum(not any(s.start < e.end and e.start < s.end for e in gs) for s in ps)
    return out


def word_arrays(gold: list[list[str]], probs: list[np.ndarray], label_names: list[str]) -> tuple[np.ndarray, ...]:
    """Every word's gold label id and tag probabilities, flattened over sentences."""
    index = label_index(label_names)
    y = np.array([index[t] for g in gold for t in g], dtype=np.int64)
    return y, np.concatenate(probs) if probs else np.zeros((0, len(label_names)))


def score_tagger(name: str, tagger: WordTagger, words: list[list[str]], gold: list[list[str]], types: list[str],
                 label_names: list[str], p: Any, seed: int) -> TokenScored:
    logits = tagger.word_logits(words, p.batch_size)
    probs = [softmax(np.nan_to_num(x, nan=0.0)) for x in logits]
    tags = tagger.tags(words, p.batch_size)[0]
    counts = entity_counts(gold, tags, types)
    y, prob = word_arrays(gold, probs, label_names)
    flat = [t for s in tags for t in s]
    metrics = {**entity_report(counts),
               "entity_f1_ci": entity_f1_ci(counts, p.bootstrap_resamples, p.confidence, seed),
               "token_accuracy": round(float(np.mean([a == b for a, b in zip(flat, (t for g in gold for t in g))])),
                                       4),
               "errors": error_kinds(gold, tags),
               "calibration": {"ece": round(expected_calibration_error(y, prob, p.calibration_bins), 4)},
               "size_bytes": type(tagger).size_bytes(tagger.folder)}
    if tagger.parameters is not None:
        metrics["parameters"] = tagger.parameters
    log.info("%s: test entity F1 %.4f", name, metrics["f1"])
    return TokenScored(tags, probs, counts, tagger.predictor(p.batch_size), metrics)


def comparisons(scored: dict[str, TokenScored], p: Any, seed: int) -> tuple[dict, dict[str, str]]:
    """Paired entity-F1 differences on the same sentences, the share of the teacher's entity F1 the students keep,
    and each verdict in words."""
    out, verdicts = {}, {}
    for a, b in PAIRS:
        c = paired_entity_f1(scored[a].counts, scored[b].counts, p.bootstrap_resamples, p.confidence, seed)
        out[f"{a}_vs_{b}"] = {**c, "significant": int(c["significant"])}
        how = ("better than" if c["delta"] > 0 else "worse than") if c["significant"] else "cannot be told from"
        verdicts[f"{a}_vs_{b}"] = (f"{a} {how} {b}: entity F1 {c['delta']:+.4f} [{c['ci_low']:+.4f}, "
                                   f"{c['ci_high']:+.4f}] on {c['sentences']} test sentences")
    ref = scored["teacher"].metrics["f1"]
    for name in STUDENTS:
        out[f"{name}_vs_teacher"]["f1_retained"] = round(scored[name].metrics["f1"] / ref, 4) if ref else 0.0
    return out, verdicts


def entity_text(tags: list[str]) -> str:
    """A sentence's entities as one string, `start:end:type` over word positions, space-separated."""
    return " ".join(f"{e.start}:{e.end}:{e.type}" for e in spans(list(tags)))


def prediction_rows(test: pd.DataFrame, scored: dict[str, TokenScored]) -> pd.DataFrame:
    """One row per sentence and model: its gold and predicted entities as `start:end:type` over words (what
    `lineage diff` compares: a sentence is right when the two are equal) and the least confident word's tag
    probability."""
    parts = []
    for name, s in scored.items():
        part = test[["id", "raw_row"]].copy()
        part.insert(0, "model", name)
        part["label"] = [entity_text(t) for t in test["tags"]]
        part["prediction"] = [entity_text(t) for t in s.tags]
        part["confidence"] = [round(float(x.max(1).min()), 6) if len(x) else 1.0 for x in s.probs]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def write_rows(test: pd.DataFrame, gold: list[list[str]], scored: dict[str, TokenScored], label_names: list[str],
               args: Any, p: Any) -> None:
    plots = Path(args.plots_dir)
    wrong = []
    type_of = lambda tag: split_tag(tag)[1] or "O"  # noqa: E731 - the entity type a word is part of
    for name, s in scored.items():
        write_csv(pd.DataFrame({"actual": [type_of(t) for g in gold for t in g],
                                "predicted": [type_of(t) for q in s.tags for t in q]}), plots / f"confusion_{name}.csv")
        y, prob = word_arrays(gold, s.probs, label_names)
        write_csv(pd.DataFrame(reliability_table(y, prob, p.calibration_bins),
                               columns=["bin", "confidence", "accuracy", "count"]), plots / f"calibration_{name}.csv")
        miss = [i for i, (g, q) in enumerate(zip(gold, s.tags)) if spans(g) != spans(q)]
        wrong.append(pd.DataFrame({
            "model": name, "id": test["id"].to_numpy()[miss],
            "label": [entity_text(gold[i]) for i in miss], "predicted": [entity_text(s.tags[i]) for i in miss],
            "confidence": [round(float(s.probs[i].max(1).min()), 4) for i in miss],
            "text": test["text"].to_numpy()[miss]}))
    table = pd.concat(wrong, ignore_index=True).sort_values(["model", "confidence"], ascending=[True, False])
    write_csv(table.groupby("model", sort=False).head(p.max_misclassified), args.misclassified)
    write_table(prediction_rows(test, scored), args.predictions)


def taggers(args: Any, stride: int) -> tuple[dict[str, WordTagger], dict[str, dict], list[str]]:
    from pipeline.core.sequence_evaluate import model_folders

    dirs, lineage, label_names = model_folders(args)
    out = {"teacher": TorchTagger(dirs["teacher"], stride=stride),
           "student": TorchTagger(dirs["student"], stride=stride),
           "baseline": CrfWordTagger(dirs["baseline"], stride=stride), ONNX_NAME: OnnxTagger(dirs[ONNX_NAME])}
    return out, lineage, label_names


def evaluate_tokens(args: Any, params: Any) -> None:
    """The stage's work for the token task: score, compare, time, write, package."""
    p = params.evaluate
    test = read_table(args.test)
    words, gold = [list(w) for w in test["tokens"]], [list(t) for t in test["tags"]]
    found, lineage, label_names = taggers(args, params.tokens.stride)
    types = sorted({t.split("-", 1)[1] for t in label_names if t != "O"})
    scored = {name: score_tagger(name, t, words, gold, types, label_names, p, params.seed)
              for name, t in found.items()}
    compared, verdicts = comparisons(scored, p, params.seed)
    results = {**{k: s.metrics for k, s in scored.items()}, "comparisons": compared}
    speed = measure_speed({k: s.predictor for k, s in scored.items()}, test["text"].tolist(), p)
    teacher_speed = speed["teacher"]
    for name in STUDENTS:
        speed[f"{name}_vs_teacher"] = {
            "throughput_speedup": round(speed[name]["cpu_samples_per_s_batch"]
                                        / teacher_speed["cpu_samples_per_s_batch"], 3),
            "latency_speedup": round(teacher_speed["cpu_latency_ms_batch1"] / speed[name]["cpu_latency_ms_batch1"], 3)}
    write_rows(test, gold, scored, label_names, args, p)
    write_json(results, args.metrics)
    write_json(speed, args.speed)
    write_json({"sentence_words": length_slices(words, gold, scored)}, args.slices)
    min_ratio = params.distill.min_val_f1_ratio
    why = write_explanations(args, params, lambda rows: explain_token_test(
        found[ONNX_NAME], found["teacher"], test, read_table(args.train), rows))
    write_text(token_report(results, speed, verdicts, len(test), min_ratio) + "\n".join(why), args.report)
    evaluated = {"raw": {"path": args.raw, "md5": file_md5(args.raw)},
                 "test": {"path": args.test, "md5": file_md5(args.test)}}
    for name, tagger in found.items():
        lin = {**lineage[name], "data": {**evaluated, **lineage[name].get("data", {})},
               "clean": as_dict(params.clean)}
        package_token_model(name, tagger.folder, Path(args.models_dir) / PACKAGED.get(name, name), results[name], lin,
                            label_names, [v for k, v in verdicts.items() if name in k.split("_vs_")],
                            test["text"].iloc[0], params.tokens.stride,
                            student_note(compared[f"{name}_vs_teacher"], results["teacher"]["f1"], results[name]["f1"],
                                         min_ratio) if name in STUDENTS else [])
    for v in verdicts.values():
        log.info("%s", v)
    log.info("student keeps %.1f%% of the teacher's entity F1 at %.2fx throughput",
             100 * compared["student_vs_teacher"]["f1_retained"], speed["student_vs_teacher"]["throughput_speedup"])
    json.dumps(results)  # fail here, not in a consumer, if a figure is not plain JSON


def length_slices(words: list[list[str]], gold: list[list[str]], scored: dict[str, TokenScored]) -> dict:
    """Entity F1 per quartile of sentence length (words)."""
    from pipeline.core.entities import entity_f1

    n = np.array([len(w) for w in words])
    edges = np.unique(np.quantile(n, [0, 0.25, 0.5, 0.75, 1.0]).round())
    groups = pd.cut(n, edges, include_lowest=True, duplicates="drop").astype(str)
    out = {}
    for value in sorted(set(groups)):
        rows = np.flatnonzero(groups == value)
        out[value] = {"support": int(len(rows)), **{name: {"entity_f1": round(float(entity_f1(s.counts.take(rows))),
                                                                              4)} for name, s in scored.items()}}
    return out
