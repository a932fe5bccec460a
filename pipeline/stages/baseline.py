"""baseline: data/processed/{train,val}.parquet -> data/models/baseline (params: task, baseline, crf).

The classical model on the same train split as the teacher: the bar a fine-tuned model must clear to be worth its
cost. The task says which: TF-IDF + logistic regression (scikit-learn) for a label per text, a linear-chain CRF on
word features (python-crfsuite) for a tag per word. Its validation metric is logged into the model's lineage.

Neither is saved as a pickle: a model file from a shared DVC cache or remote must not be able to run code when
loaded. The logistic regression is a skops file (`pipeline.core.modeling.load_baseline` trusts only skops' default
safe types), the CRF CRFsuite's own binary format.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.io import atomic_path, read_table, run_stage, setup_logging, stage_args, write_lineage
from pipeline.core.params import load_params
from pipeline.core.tasks import task_for
from pipeline.core.training import lineage_record

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "train", "val", "output")
    params = load_params(args.params)
    task = task_for(params)
    train_df, val_df = read_table(args.train), read_table(args.val)
    label_names = task.label_names(train_df)
    task.check_splits({"train": train_df, "val": val_df}, label_names)
    out = Path(args.output)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        section, val, resolved = task.fit_baseline(params, train_df, val_df, label_names, tmp)
        log.info("baseline val %s", val)
        lineage = lineage_record("baseline", section, params.seed, {"train": args.train, "val": args.val},
                                 label_names=label_names, val_metrics=val, train_rows=len(train_df),
                                 resolved=resolved)
        write_lineage(tmp, lineage)


if __name__ == "__main__":
    run_stage(main)
