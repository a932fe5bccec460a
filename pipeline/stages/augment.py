"""augment: data/interim/audited.parquet -> data/interim/augmented.parquet (params: seed, augment).

Adds synonym-swap (nlpaug + WordNet, offline) and back-translation (Apertium offline, or any Hugging Face
translation pair) variants of original rows, balance-aware: only classes below `minority_ratio` of the largest
are "minority", and a class gets variants only until it reaches `max_ratio` of the largest (plan()). URLs,
e-mails, handles, hashtags, numbers and amounts are masked before a method runs and restored after it
(pipeline/core/protect.py). A variant keeps its source's `source_id`, so the split stage keeps it in the same split
as its source. A variant that lost a protected token, is empty, identical to its source, out of the length-ratio
bounds, too dissimilar to its source (sentence-embedding cosine) or a duplicate of a text already present is
dropped and counted with that reason.

Each variant is seeded from (seed, row id, method, variant number), not from its position in a batch, so the
output does not depend on batch size or row order.
"""
from __future__ import annotations

import logging

from pipeline.core.augmenting import (  # noqa: F401 - the stage's names, as before the task seam
    AugmentResult,
    EmbeddingSimilarity,
    Job,
    judge_variants,
    plan,
    row_seed,
    select_classes,
    stage_metrics,
)
from pipeline.core.io import read_table, run_stage, setup_logging, stage_args, write_json, write_table
from pipeline.core.params import load_params
from pipeline.core.sequence_augment import (  # noqa: F401
    TOKEN,
    ApertiumTranslator,
    HFTranslator,
    SynonymSwapper,
    augment,
    build_jobs,
    needs_filter,
)
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "dropped", "metrics")
    params = load_params(args.params)
    p = params.augment
    df = read_table(args.input)
    task = task_for(params)
    task.check_augment(p)
    result = task.augment(df, p, params.seed)
    metrics = stage_metrics(df, result)
    write_table(result.rows, args.output)
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("per class %s -> %s; added %s; dropped %s; similarity quantiles %s", metrics["per_class_before"],
             metrics["per_class"], metrics["added"], metrics["dropped"], metrics["similarity"])


if __name__ == "__main__":
    run_stage(main)
