"""Model cards and packaging: models/<name>/ as evaluate writes it — the trained folder, a Hugging Face model card
(README.md) with the test evidence, and the lineage that traces it to its data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.core.io import atomic_path, write_lineage
from pipeline.core.names import ONNX_NAME
from pipeline.core.onnx_model import FP32_FILE
from pipeline.core.scoring import PackagedModel, kind_of


def calibration_note(cal: dict) -> str:
    """The calibration line of a card: the test ECE, and the temperature the packaged model applies."""
    if "temperature" in cal:
        return (f"expected calibration error {cal['ece']:.4f} on test (before temperature scaling "
                f"{cal['ece_before_scaling']:.4f}). The classification layer of this packaged model is divided by "
                f"T = {cal['temperature']} (fitted on validation; `calibration_temperature` in config.json), so its "
                "probabilities are the scaled ones and its predicted labels are unchanged.")
    return f"expected calibration error {cal.get('ece', float('nan')):.4f} on test (not rescaled)."


def ci_text(m: dict) -> str:
    """A metric with its CI, as cards and REPORT.md print it."""
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def model_card(name: str, kind: type[PackagedModel], folder: Path, metrics: dict, lineage: dict,
               label_names: list[str], speed: dict, verdicts: list[str], worst: list[str], example: str,
               notes: list[str] = ()) -> str:
    """models/<name>/README.md: what the model is, its test metrics with CIs, its verdicts, weakest slices,
    calibration, lineage, params and how to load it (Hugging Face card front matter first)."""
    base = lineage.get("base_model") or lineage.get("teacher") or ""
    front = ["---", "library_name: " + kind.library,
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
    use = kind.usage(folder, example)
    return card_text(front, name, how, label_names, metrics, speed, verdicts, worst, lineage, use, notes)


def card_text(front: list[str], name: str, how: str, label_names: list[str], metrics: dict, speed: dict,
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
| accuracy [95% CI] | {ci_text(metrics['accuracy_ci'])} |
| macro F1 [95% CI] | {ci_text(metrics['macro_f1_ci'])} |
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
    the model is made to divide its logits by it, so every consumer (transformers.pipeline included) gets calibrated
    probabilities with unchanged argmax."""
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(FP32_FILE))
        if temperature is not None:
            kind_of(src).set_temperature(tmp, temperature)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_lineage(tmp, {**lineage, "model": name, "temperature": temperature})


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
