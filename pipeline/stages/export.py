"""export: data/models/{student,teacher} -> data/models/onnx/<model>/ (params: export).

The task exports: each model to ONNX (fp32) with dynamic batch and sequence axes, quantised to int8 with
onnxruntime, and checked on every test row before anything ships: the fp32 graph must match torch's logits, the
shipped model must keep `min_macro_f1_ratio` of the torch model's primary metric (macro-F1 for a label per text,
entity F1 for a tag per word: quantised NER models are known to lose entities that per-word agreement hides) and,
for a label per text, not be shown by the test rows (one-sided bound, `agreement_confidence`) to agree with its
predictions on fewer than `min_agreement` of them. `quantize: auto` tries the int8 recipes smallest first and
falls back to fp32. pipeline/core/sequence_export.py and token_export.py hold the two; the figures go to
metrics/export.json and the model's lineage.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.io import atomic_path, read_table, run_stage, setup_logging, stage_args, write_json
from pipeline.core.params import load_params
from pipeline.core.sequence_export import (  # noqa: F401 - the sequence core, re-exported for its callers
    ParityError,
    agreement_by_batch,
    choose_recipe,
    export_one,
    selection_rows,
)
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "student", "teacher", "train", "val", "test", "output", "metrics")
    params = load_params(args.params)
    test, val, train = read_table(args.test), read_table(args.val), read_table(args.train)
    sources = {"student": Path(args.student), **({"teacher": Path(args.teacher)} if params.export.teacher else {})}
    with atomic_path(args.output) as tmp:
        tmp.mkdir()
        figures = task_for(params).export_models(sources, tmp, params, train, val, test, args.test)
    write_json(figures, args.metrics)


if __name__ == "__main__":
    run_stage(main)
