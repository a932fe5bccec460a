"""export: data/models/{student,teacher} -> data/models/onnx/<model>/ (params: export).

Exports each model to ONNX (fp32), quantises it to int8 with onnxruntime, and checks parity on every test row
before anything ships: the fp32 graph must match torch's logits to `max_logit_diff`, the int8 model must keep
`min_macro_f1_ratio` of the torch model's test macro-F1 and predict the same label on `min_agreement` of the rows.
The stage fails with the figures otherwise. Parity figures go to metrics/export.json; `evaluate` then reports the
int8 student's quality and CPU speed like the other models and packages it as models/student-onnx.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.io import KnownError, atomic_path, read_table, run_stage, setup_logging, stage_args, write_json
from pipeline.modeling import classification_metrics, load_classifier, load_tokenizer, predict_logits
from pipeline.onnx_model import FP32_FILE, ONNX_FILE, OnnxClassifier, export_fp32, quantize_int8
from pipeline.params import ExportParams, load_params

log = logging.getLogger(__name__)


class ParityError(KnownError):
    """The exported model does not behave like the torch one."""


def export_one(src: Path, dest: Path, texts: list[str], y: np.ndarray, p: ExportParams) -> dict:
    model, tok = load_classifier(str(src), str(src)), load_tokenizer(str(src), str(src))
    lineage = json.loads((src / "lineage.json").read_text())
    max_length = int(lineage["params"]["max_length"])
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    cfg = json.loads((dest / "config.json").read_text())
    cfg["export_max_length"] = max_length
    (dest / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    export_fp32(model, tok, dest / FP32_FILE, max_length)
    if p.quantize:
        quantize_int8(dest / FP32_FILE, dest / ONNX_FILE)
    else:
        shutil.copy(dest / FP32_FILE, dest / ONNX_FILE)

    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    ref = predict_logits(model, tok, texts, p.batch_size, max_length, device="cpu", progress=False)
    fp32 = OnnxClassifier(dest, FP32_FILE).logits(texts, p.batch_size)
    q = OnnxClassifier(dest).logits(texts, p.batch_size)
    f1_torch = classification_metrics(y, ref.argmax(1), names)["macro_f1"]
    f1_q = classification_metrics(y, q.argmax(1), names)["macro_f1"]
    figures = {
        "max_abs_logit_diff_fp32": float(np.abs(fp32 - ref).max()),
        "macro_f1_torch": round(f1_torch, 4), "macro_f1_onnx": round(f1_q, 4),
        "macro_f1_ratio": round(f1_q / f1_torch, 4) if f1_torch else 0.0,
        "label_agreement": round(float((q.argmax(1) == ref.argmax(1)).mean()), 4),
        "size_bytes_onnx": (dest / ONNX_FILE).stat().st_size,
        "size_bytes_torch": sum(f.stat().st_size for f in src.glob("*.safetensors")),
        "test_rows": len(texts), "int8": p.quantize,
    }
    failed = [f"fp32 max |logit diff| {figures['max_abs_logit_diff_fp32']:.2e} > {p.max_logit_diff:g}"
              if figures["max_abs_logit_diff_fp32"] > p.max_logit_diff else "",
              f"macro-F1 ratio {figures['macro_f1_ratio']} < {p.min_macro_f1_ratio}"
              if figures["macro_f1_ratio"] < p.min_macro_f1_ratio else "",
              f"label agreement {figures['label_agreement']} < {p.min_agreement}"
              if figures["label_agreement"] < p.min_agreement else ""]
    failed = [f for f in failed if f]
    if failed:
        raise ParityError(f"{src} -> ONNX: parity does not hold on {len(texts)} test rows: {'; '.join(failed)} "
                          f"(export.* params set the bounds; export.quantize: false ships fp32)")
    (dest / "lineage.json").write_text(json.dumps({**lineage, "export": figures}, indent=2, sort_keys=True) + "\n")
    return figures


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "student", "teacher", "test", "output", "metrics")
    params = load_params(args.params)
    p = params.export
    test = read_table(args.test)
    sources = {"student": Path(args.student), **({"teacher": Path(args.teacher)} if p.teacher else {})}
    figures = {}
    with atomic_path(args.output) as tmp:
        tmp.mkdir()
        for name, src in sources.items():
            cfg = json.loads((src / "config.json").read_text())
            label2id = {v: int(k) for k, v in cfg["id2label"].items()}
            unseen = sorted(set(test["label"]) - set(label2id))
            if unseen:
                raise KnownError(f"{args.test}: label(s) {unseen} unknown to {src}")
            y = test["label"].map(label2id).to_numpy()
            figures[name] = export_one(src, tmp / name, test["text"].tolist(), y, p)
            log.info("%s: %s", name, figures[name])
    write_json(figures, args.metrics)


if __name__ == "__main__":
    run_stage(main)
