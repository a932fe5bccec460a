"""The token task's model cards (models/<name>/README.md, Hugging Face front matter first) and REPORT.md.

A token model is packaged as a sequence model is (pipeline/core/cards.py: the folder, its card, its lineage), with
`window_stride` written into a transformers or ONNX folder's config.json, so whoever loads it reads long sentences in
the same overlapping windows evaluate scored. No temperature is fitted: a word's confidence is reported as the
model gives it, with its calibration error on the test words.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.core.io import atomic_path, write_lineage
from pipeline.core.names import ONNX_NAME
from pipeline.core.onnx_model import FP32_FILE

HOW = {
    "teacher": "Fine-tuned from `{base}` for token classification with `transformers.Trainer` by the `train` stage.",
    "student": "Distilled word by word from the teacher (`{base}`) by the `distill` stage.",
    "baseline": "A linear-chain CRF on word-shape features (python-crfsuite) by the `baseline` stage.",
    ONNX_NAME: "The distilled student exported to ONNX and quantised to int8 by the `export` stage, behind a gate on "
               "test entity F1 (`metrics/export.json`).",
}


def ci(m: dict) -> str:
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


USE = {
    "baseline": ("```python\nfrom pipeline.core.token_scoring import open_tagger\n"
                 "open_tagger({path!r}).spans([{example!r}])\n```"),
    ONNX_NAME: "```bash\nfinetune predict --model {path} --text {quoted}\nfinetune serve --model {path}\n```",
}
HF_USE = ('```python\nfrom transformers import pipeline\n'
          'ner = pipeline("token-classification", model="{path}", aggregation_strategy="first")\nner({example!r})\n```')


def usage(name: str, folder: Path, example: str) -> str:
    return USE.get(name, HF_USE).format(path=str(folder), example=example, quoted=json.dumps(example))


def card(name: str, folder: Path, metrics: dict, lineage: dict, label_names: list[str], verdicts: list[str],
         example: str, notes: list[str] = ()) -> str:
    base = lineage.get("base_model") or lineage.get("teacher") or ""
    front = ["---", "library_name: " + {"baseline": "python-crfsuite", ONNX_NAME: "onnx"}.get(name, "transformers"),
             "pipeline_tag: token-classification", "tags: [finetune-pipeline, dvc, ner]"]
    if base and name == "teacher":
        front.append(f"base_model: {base}")
    types = "\n".join(f"| {t} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                      for t, v in metrics["per_type"].items())
    errors = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in metrics["errors"].items())
    data = "\n".join(f"| {k} | `{v['path']}` | `{v['md5']}` |" for k, v in lineage.get("data", {}).items())
    return "\n".join([
        *front, "---", f"# {name}", "", HOW[name].format(base=base) + " Task: token classification (named "
        f"entities, BIO tags: {', '.join(label_names)}).", "",
        *(["## Read this first", "", *[f"- {n}" for n in notes], ""] if notes else []),
        "## Test metrics", "", "| metric | value |", "|---|---|",
        f"| entity F1, strict micro [95% CI] | {ci(metrics['entity_f1_ci'])} |",
        f"| entity precision / recall | {metrics['precision']:.4f} / {metrics['recall']:.4f} |",
        f"| word tag accuracy | {metrics['token_accuracy']:.4f} |",
        f"| tag calibration error (ECE, words) | {metrics['calibration']['ece']:.4f} |",
        f"| parameters | {metrics.get('parameters', 'n/a')} |", f"| size on disk (bytes) | {metrics['size_bytes']} |",
        "", f"Errors on test entities: {errors}.", "", "| type | precision | recall | F1 | support |",
        "|---|---|---|---|---|", types, "", "Paired comparisons on the same test sentences (bootstrap CI of the "
        "entity-F1 difference):", "", *[f"- {v}" for v in verdicts], "",
        "CPU throughput and latency are machine figures: `metrics/speed.json` and `metrics/REPORT.md`.", "",
        "## Use", "", usage(name, Path("models") / folder.name, example), "",
        "## Lineage", "", "| data | path | md5 |", "|---|---|---|", data, "",
        "Every param, seed and resolved setting: `lineage.json` beside this card.", ""])


def student_note(comparison: dict, teacher_f1: float, student_f1: float, min_ratio: float) -> list[str]:
    """What a student card must say plainly when the student keeps less than the bar of the teacher's entity F1."""
    kept = comparison["f1_retained"]
    if kept >= min_ratio:
        return []
    return [f"This student keeps {kept:.1%} of the teacher's test entity F1 ({student_f1:.4f} vs {teacher_f1:.4f}; "
            f"difference {comparison['delta']:+.4f} [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}] on "
            f"the same {comparison['sentences']} sentences), under the {min_ratio:.0%} bar "
            "(distill.min_val_f1_ratio). More teacher layers (distill.layers) or hidden-state matching "
            "(distill.hidden_weight) keep more, at less speed: docs/ner.md has the figures."]


def package_token_model(name: str, src: Path, dest: Path, metrics: dict, lineage: dict, label_names: list[str],
                        verdicts: list[str], example: str, stride: int, notes: list[str] = ()) -> None:
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(FP32_FILE))
        cfg_path = tmp / "config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            cfg["window_stride"] = stride
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(card(name, dest, metrics, lineage, label_names, verdicts, example, notes),
                                       encoding="utf-8")
        write_lineage(tmp, {**lineage, "model": name, "temperature": None})


def token_report(results: dict, speed: dict, verdicts: dict[str, str], n_test: int, min_ratio: float = 0.98) -> str:
    rows = []
    for name in ("teacher", "student", ONNX_NAME, "baseline"):
        r, sp = results[name], speed[name]
        rows.append(f"| {name} | {ci(r['entity_f1_ci'])} | {r['precision']:.4f} | {r['recall']:.4f} | "
                    f"{sp['cpu_samples_per_s_batch']:.0f} | {sp['cpu_latency_ms_batch1']:.1f} | "
                    f"{r['size_bytes'] / 2**20:.1f} MiB |")
    kept = results["comparisons"]["student_vs_teacher"]["f1_retained"]
    types = sorted(results["teacher"]["per_type"])
    per_type = [f"| {t} | {results['teacher']['per_type'][t]['support']} | "
                + " | ".join(f"{results[m]['per_type'][t]['f1']:.3f}" for m in ("teacher", "student", ONNX_NAME,
                                                                               "baseline")) + " |" for t in types]
    return "\n".join([
        f"# Test results: token classification ({n_test} test sentences)", "",
        "| model | entity F1 [95% CI] | precision | recall | CPU sentences/s (batch 32) | CPU latency ms (batch 1) "
        "| size |", "|---|---|---|---|---|---|---|", *rows, "",
        f"The student keeps {kept:.1%} of the teacher's entity F1"
        + (f", under the {min_ratio:.0%} bar: see its card." if kept < min_ratio else "."), "",
        "Paired comparisons on the same test sentences (bootstrap CI of the entity-F1 difference):", "",
        *[f"- {v}" for v in verdicts.values()], "",
        "Entity F1 per type (strict; a type with few test entities has a wide CI of its own):", "",
        "| type | test entities | teacher | student | int8 student | CRF |", "|---|---|---|---|---|---|", *per_type, "",
        "Errors by kind per model (wrong type, wrong span, both, missed, spurious): `metrics/eval.json`. Speeds "
        "time raw text in, entity spans out, on this run's machine (`metrics/speed.json`).", ""])
