"""evaluate: teacher, student, baseline on data/processed/test.parquet -> metrics, models/ (params: evaluate).

Scores every model on the test split and writes two metrics files keyed by model: quality (`eval.json`: the task's
primary metric, macro-F1 or entity F1, with bootstrap 95% CIs, per-class or per-type figures, parameter count,
size on disk, and paired comparisons on the same test rows or sentences: teacher vs baseline, student vs teacher)
and speed (`speed.json`: CPU throughput at batch 32, latency at batch 1, timed in interleaved rounds in one process
so the student/teacher ratio is fair on a noisy machine), so that `dvc metrics diff` of two runs with identical
models shows no quality change. Also a readable `REPORT.md` (with why the models decide: word attributions, and a
shortcut check), confusion matrices and reliability tables as `dvc plots` sources, the words that most move each
class (`top_words.csv`, a bar chart), the test errors and disagreements with their words shaded
(`explanations.html`), the misclassified rows, the per-row predictions (`lineage diff`), and `models/<name>/`: each
model with a model card and the md5 of the data it was trained on. The task does the work
(pipeline/core/sequence_evaluate.py, token_evaluate.py).
"""
from __future__ import annotations

import logging

from pipeline.core.io import run_stage, setup_logging, stage_args
from pipeline.core.params import load_params
from pipeline.core.sequence_evaluate import slice_metrics  # noqa: F401 - the sequence core, re-exported
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "test", "val", "teacher", "student", "baseline", "metrics", "speed",
                      "slices", "report", "plots_dir", "misclassified", "models_dir", "raw", "predictions", "onnx",
                      "blend", "train", "top_words", "explanations", argv=argv)
    params = load_params(args.params)
    task_for(params).evaluate(args, params)


if __name__ == "__main__":
    run_stage(main)
