"""clean: raw file -> data/interim/clean.parquet (params: task, clean, tokens).

The raw file is a table (CSV/TSV/JSONL/Parquet or a Hub dataset) or, for `task: token`, a CoNLL or JSONL file.

The task reads and cleans (pipeline/core/sequence_clean.py for one label per text, token_clean.py for one tag per
word): text normalised, duplicates and conflicting labels dropped, every dropped row written with its reason, so
`rows_in == rows_out + sum(dropped)` always holds, and the classes checked for a split before any heavy stage.
"""
from __future__ import annotations

import logging

from pipeline.core.io import run_stage, setup_logging, stage_args, write_json, write_table
from pipeline.core.params import load_params
from pipeline.core.sequence_clean import (  # noqa: F401 - the sequence core, re-exported for its callers
    PARALLEL_ROWS,
    CleanResult,
    clean,
    clean_file,
    content_ids,
    drop_reasons,
    normalise_all,
    stage_metrics,
    with_feedback,
)
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "dropped", "metrics", optional=("feedback",))
    params = load_params(args.params)
    task = task_for(params)
    result = task.clean_file(args.input, params, args.feedback)
    metrics = task.clean_metrics(result)
    write_table(result.kept, args.output)
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("kept %d of %d rows; dropped %s", metrics["rows_out"], metrics["rows_in"], metrics["dropped"])


if __name__ == "__main__":
    run_stage(main)
