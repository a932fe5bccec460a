"""teacher_logits: data/models/teacher + data/processed/train.parquet -> data/distill/teacher_logits.parquet.

The teacher's logits on every training row, computed once and cached by DVC as their own output, so a sweep of
distillation params (`dvc exp run -S distill.alpha=0.7`) reruns only the student, never the teacher. With
`inference.engine: ray` the same batches run on a Ray Data actor pool (pipeline/core/engine.py), byte-identical.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from pipeline.core.engine import engine_for
from pipeline.core.io import read_table, run_stage, setup_logging, stage_args, write_table
from pipeline.core.modeling import (
    lineage_max_length,
    lineage_truncation,
    load_classifier,
    load_tokenizer,
    predict_logits,
)
from pipeline.core.params import load_params
from pipeline.core.scoring import Scorer

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "teacher", "train", "output")
    params = load_params(args.params)
    df = read_table(args.train)
    tokenizer = load_tokenizer(args.teacher, "teacher")
    model = load_classifier(args.teacher, "teacher")
    # As many tokens as the teacher read in training (resolved there when train.max_length is auto).
    lineage = json.loads((Path(args.teacher) / "lineage.json").read_text())
    texts, batch_size = df["text"].tolist(), params.train.eval_batch_size
    engine = engine_for(params.inference)
    if engine is None:
        logits = predict_logits(model, tokenizer, texts, batch_size, lineage_max_length(lineage),
                                truncation=lineage_truncation(lineage))
    else:  # the same batches on a Ray actor pool: byte-identical logits (pipeline/core/engine.py)
        try:
            logits = Scorer(args.teacher, engine=engine).logits(texts, batch_size)
        finally:
            engine.close()
    # raw_row too: every table points at the raw line of its rows (lineage).
    write_table(pd.DataFrame({"id": df["id"], "raw_row": df["raw_row"], "logits": list(logits)}), args.output)
    log.info("teacher logits for %d training rows", len(df))


if __name__ == "__main__":
    run_stage(main)
