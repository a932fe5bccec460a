"""baseline: data/processed/{train,val}.parquet -> data/models/baseline/model.skops (params: baseline).

TF-IDF + logistic regression (scikit-learn) on the same train split as the teacher: the bar a fine-tuned model
must clear to be worth its cost. Validation macro-F1 is logged into the model's lineage.

Saved with skops, not pickle/joblib: a model file from a shared DVC cache or remote must not be able to run code
when loaded. `pipeline.core.modeling.load_baseline` loads it trusting only skops' default safe types.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.io import atomic_path, read_table, run_stage, setup_logging, stage_args, write_lineage
from pipeline.core.metrics import classification_metrics, encode_labels
from pipeline.core.modeling import BASELINE_FILE, save_baseline
from pipeline.core.params import load_params
from pipeline.core.tasks import task_for
from pipeline.core.training import lineage_record

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "train", "val", "output")
    params = load_params(args.params)
    task = task_for(params.task)
    train_df, val_df = read_table(args.train), read_table(args.val)
    label_names = task.label_names(train_df)
    task.check_splits({"train": train_df, "val": val_df}, label_names)
    model, analyzer = task.build_baseline(params.baseline, params.seed, train_df["text"].tolist())
    log.info("baseline.analyzer %s -> %s", params.baseline.analyzer, analyzer)
    model = model.fit(train_df["text"], train_df["label"])
    # classes_ are the sorted label names, the same order as the transformer models' ids.
    val = classification_metrics(encode_labels(val_df["label"], label_names, args.val),
                                 encode_labels(model.predict(val_df["text"]), label_names, args.output), label_names)
    log.info("baseline val macro-F1 %.4f", val["macro_f1"])
    lineage = lineage_record("baseline", params.baseline, params.seed, {"train": args.train, "val": args.val},
                             label_names=label_names, val_metrics={"macro_f1": val["macro_f1"]},
                             train_rows=len(train_df), resolved={"analyzer": analyzer})
    out = Path(args.output)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_baseline(model, tmp / BASELINE_FILE)
        write_lineage(tmp, lineage)


if __name__ == "__main__":
    run_stage(main)
