"""ingest: labelled rows (e.g. monitor's to_label.csv, filled in) into the feedback file that `clean` reads.

    finetune ingest reports/monitor/to_label.csv            # then: dvc repro

The feedback file (dvc.yaml's `feedback` var, data/feedback/labelled.csv) is the pipeline's second raw file: `clean`
reads it after the raw file, normalises and deduplicates its rows with the same rules, and gives each a negative
`raw_row` (-k: data row k of the feedback file), so `finetune lineage trace` shows the request it came from. Each
appended row keeps its provenance: request id, time and model md5 of the prediction that was corrected, when the
file was ingested, and which file and row it came from.

Checked before anything is written, each problem naming the file and row: a `text` and a `label` column, UTF-8,
no empty text in a labelled row, every label one of the data's classes. For the token task a label is the text's
entities as JSON spans (`[[start, end, "type"], ...]`, or the list `predict` and `monitor --to-label` write, corrected
in place; `[]`: no entity), each inside the text, on its words, of one of the data's entity types
(pipeline/core/token_feedback.py). Skipped and counted (never silently):
rows without a label (not labelled yet), rows already in the feedback file, rows whose text is already a raw row
(correct that row's label in the raw file instead). The file is rewritten whole (atomically).
"""
from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline.core.feedback import FEEDBACK_COLUMNS, read_feedback
from pipeline.core.io import DataError, atomic_path, run_stage, setup_logging
from pipeline.core.params import CleanParams, load_params
from pipeline.core.project import workspace
from pipeline.core.tasks import Task, task_for

log = logging.getLogger(__name__)

def ingest(labelled: pd.DataFrame, name: str, feedback: pd.DataFrame, labels: list[str], raw: set[str],
           p: CleanParams, task: Task) -> tuple[pd.DataFrame, dict]:
    """Pure core: (the feedback table with the new rows appended, counts). Raises DataError on a bad row. `labels`
    are the data's classes (entity types for the token task), `raw` the raw file's texts as `task.feedback_key`
    writes them."""
    from pipeline.core.text import normalise_text

    for col in ("text", "label"):
        if col not in labelled.columns:
            raise DataError(f"{name}: no column {col!r}; columns are {list(labelled.columns)}")
    labelled = labelled.reset_index(drop=True)
    has_label = labelled["label"].notna() & labelled["label"].astype(str).str.strip().ne("")
    counts = {"rows_in": len(labelled), "unlabelled": int((~has_label).sum())}
    rows = labelled[has_label]
    keys, stored = {}, {}
    for i, r in rows.iterrows():  # data row i + 1 of the file (the header is not counted)
        text = normalise_text(r["text"], p) if isinstance(r["text"], str) else ""
        if not text:
            raise DataError(f"{name}: data row {i + 1} has a label but no text")
        stored[i] = task.feedback_label(r["label"], r["text"], labels, p, f"{name}: data row {i + 1}")
        keys[i] = task.feedback_key(r["text"], p)
    seen = {task.feedback_key(t, p) for t in feedback["text"] if isinstance(t, str)}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new, skipped_feedback, skipped_raw = [], 0, 0
    for i, r in rows.iterrows():
        if keys[i] in seen:
            skipped_feedback += 1
            continue
        if keys[i] in raw:
            skipped_raw += 1
            continue
        seen.add(keys[i])
        new.append({"text": r["text"], "label": stored[i], "request_id": r.get("request_id"),
                    "time": r.get("time"), "model_md5": r.get("model_md5"), "ingested_at": now,
                    "source": f"{name}:{i + 1}"})
    counts.update({"already_in_feedback": skipped_feedback, "already_in_raw_data": skipped_raw, "added": len(new)})
    out = pd.concat([feedback.reindex(columns=FEEDBACK_COLUMNS), pd.DataFrame(new, columns=FEEDBACK_COLUMNS)],
                    ignore_index=True)
    return out, counts


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("labelled", help="a CSV with text and label columns (request_id, time, model_md5 kept if there)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()

    def _run() -> None:
        root = Path(args.params).resolve().parent
        rev = workspace(root)
        feedback_path = root / rev.feedback_path()
        if not feedback_path.parent.is_dir():
            raise DataError(f"{feedback_path.parent}: no such folder (dvc.yaml's `feedback` var)")
        if not Path(args.labelled).is_file():
            raise DataError(f"{args.labelled}: no such file")
        labelled = read_feedback(Path(args.labelled))
        clean_out = root / rev.path("clean", "output")
        params = load_params(args.params)
        task = task_for(params)
        labels = task.feedback_classes(clean_out, params.clean)
        raw = task.raw_keys(root / rev.raw_path(), params)
        out, counts = ingest(labelled, Path(args.labelled).name, read_feedback(feedback_path), labels, raw,
                             params.clean, task)
        with atomic_path(feedback_path) as tmp:
            out.to_csv(tmp, index=False)
        log.info("%s: %d row(s) added to %s (%s); next: `dvc repro`", args.labelled, counts["added"], feedback_path,
                 ", ".join(f"{k} {v}" for k, v in counts.items() if k != "added"))

    run_stage(_run)


if __name__ == "__main__":
    main()
