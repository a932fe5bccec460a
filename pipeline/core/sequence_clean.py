"""The sequence task's clean (one label per text): a raw table (CSV/TSV/JSONL/Parquet or a Hub dataset) -> kept rows
and dropped rows with their reasons.

Normalises text (ftfy, NFKC, HTML and control characters, whitespace, optional PII masking) and labels,
drops too-short/too-long texts and duplicates, and drops *and counts* texts seen with conflicting labels.
Every dropped row is written with its reason, so `rows_in == rows_out + sum(dropped)` always holds.
"""
from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.checks import class_size_problems
from pipeline.core.feedback import read_feedback
from pipeline.core.io import DataError, class_counts, drop_counts, stable_id
from pipeline.core.params import CleanParams, Params
from pipeline.core.raw_checks import raw_table_problems
from pipeline.core.records import read_records
from pipeline.core.text import CHANGED_CHARS, SPACE, dedup_key, normalise_text, raw_label_key

log = logging.getLogger(__name__)


@dataclass
class CleanResult:
    kept: pd.DataFrame  # LINEAGE_COLUMNS
    dropped: pd.DataFrame  # id, reason, raw_row, text, label
    rows_in: int
    restored_rows: int = 0  # rows split back out of quote-swallowed records (clean.multiline_records: recover)
    bare_cr: int = 0  # bare carriage returns replaced by a space (clean.multiline_records: recover)
    text_changed_rows: int = 0  # rows that lost more than CHANGED_CHARS characters (beyond whitespace)
    chars_removed: int = 0
    feedback_rows: int = 0  # rows read from the feedback file (raw_row < 0)
    extra: dict = field(default_factory=dict)  # a task's own counts for the metrics (the token task's tokens)


def _label_name(raw: object, p: CleanParams) -> str:
    s = raw_label_key(raw)
    return p.label_names.get(s, s)


def content_ids(raw_text: pd.Series) -> list[str]:
    """Row ids from content, not position: a hash of the raw text (whitespace collapsed) and its occurrence number
    among identical texts in file order. Adding, deleting, reordering other rows, renaming the file or correcting a
    label keeps a row's id; only editing its own text (or an earlier identical copy's) gives a new one."""
    seen: dict[str, int] = {}
    ids = []
    for t in raw_text:
        key = "" if t is None or (isinstance(t, float) and pd.isna(t)) else SPACE.sub(" ", str(t)).strip()
        k = seen.get(key, 0)
        seen[key] = k + 1
        ids.append(stable_id("row", key, k))
    return ids


def _labels(raw_label: pd.Series, row_no: pd.Index, p: CleanParams, source_name: str) -> tuple[pd.Series, pd.Series]:
    """(label names, which rows have none), or an error naming the rows: an empty label under `missing_label:
    error`, a label outside `allowed_labels`."""
    label_missing = raw_label.isna() | raw_label.astype(str).str.strip().eq("")
    if label_missing.any() and p.missing_label == "error":
        bad = [int(r) for r in row_no[label_missing.to_numpy()][:5]]
        raise DataError(
            f"{source_name}: column {p.label_column!r} is empty in {int(label_missing.sum())} row(s), first at data "
            f"row(s) {bad}; fix the file or set clean.missing_label: drop"
        )
    labels = pd.Series([None if m else _label_name(v, p) for v, m in zip(raw_label, label_missing)], dtype=object)
    if p.allowed_labels:
        unknown = ~labels.isin(p.allowed_labels) & ~label_missing.to_numpy()
        if unknown.any():
            i = int(unknown.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{source_name}: data row {row_no[i]} has label {labels[i]!r}, not in clean.allowed_labels "
                f"{p.allowed_labels} ({int(unknown.sum())} such rows)"
            )
    return labels, label_missing


PARALLEL_ROWS = 50_000  # below this, worker processes cost more than they save


def _normalise_chunk(texts: list, p: CleanParams) -> list[str]:
    return [normalise_text(t, p) if isinstance(t, str) else "" for t in texts]


def normalise_all(texts: list, p: CleanParams) -> list[str]:
    """normalise_text over every row (non-strings give ""), on every core for large inputs: the same list either way."""
    jobs = os.cpu_count() or 1
    if jobs < 2 or len(texts) < PARALLEL_ROWS:
        return _normalise_chunk(texts, p)
    from joblib import Parallel, delayed

    step = -(-len(texts) // (4 * jobs))
    parts = Parallel(n_jobs=jobs)(delayed(_normalise_chunk)(texts[i:i + step], p) for i in range(0, len(texts), step))
    return [t for part in parts for t in part]


def _texts(raw_text: pd.Series, row_no: pd.Index, p: CleanParams, source_name: str
           ) -> tuple[list[str], pd.Series, list[int]]:
    """(normalised texts, which rows hold no string, characters removed per row), or an error when the column
    holds no strings or only empty texts."""
    non_string = pd.Series([not isinstance(t, str) and not pd.isna(t) for t in raw_text], dtype=bool)
    if non_string.any() and non_string.sum() == raw_text.notna().sum():
        i = int(non_string.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{source_name}: column {p.text_column!r} holds no strings (data row {row_no[i]}: "
            f"{type(raw_text.iloc[i]).__name__.removesuffix('64')} {raw_text.iloc[i]}); is clean.text_column the "
            "right column?"
        )
    texts = normalise_all(raw_text.tolist(), p)
    if not any(texts):
        raise DataError(f"{source_name}: every text in column {p.text_column!r} is empty")
    # Characters removed by normalisation beyond whitespace and entity decoding (`&lt;` is one character, not four):
    # counted, never lost silently.
    removed = [len(SPACE.sub(" ", html.unescape(t) if p.strip_html else t).strip()) - len(n) if isinstance(t, str)
               else 0 for t, n in zip(raw_text, texts)]
    return texts, non_string, removed


def drop_reasons(frame: pd.DataFrame, p: CleanParams, label_missing: pd.Series, non_string: pd.Series) -> pd.Series:
    """Per row, why it is dropped (None: kept), the first reason that applies: no label, no string, empty, too
    short or long, a text seen with two labels, a duplicate."""
    reason = pd.Series([None] * len(frame), dtype=object)
    reason[label_missing.to_numpy()] = "missing_label"
    reason[reason.isna() & non_string.to_numpy()] = "non_string_text"
    n_chars = frame["text"].str.len()
    reason[reason.isna() & n_chars.eq(0)] = "empty_text"
    reason[reason.isna() & n_chars.between(1, p.min_chars - 1)] = "too_short"
    reason[reason.isna() & n_chars.gt(p.max_chars)] = "too_long"
    return dedup_reasons(frame["text"], frame["label"], reason, p)


def dedup_reasons(text: pd.Series, label: pd.Series, reason: pd.Series, p: CleanParams) -> pd.Series:
    """`reason` with the rows still kept marked as conflicts or repeats: a text seen with two different `label`s
    (a label, or a sentence's whole tagging) drops every copy, as there is no way to tell which is right; then
    exact repeats, then (dedup: normalised) repeats up to case, accents and spacing, each keeping its first."""
    if p.dedup == "none":
        return reason
    key = text if p.dedup == "exact" else text.map(dedup_key)
    alive = reason.isna()
    n_labels = label[alive].groupby(key[alive]).transform("nunique")
    conflict = pd.Series(False, index=text.index)
    conflict[n_labels.index] = n_labels.gt(1)
    reason[conflict] = "label_conflict"
    alive = reason.isna()
    reason[text.where(alive).duplicated(keep="first") & alive] = "duplicate_exact"
    if p.dedup == "normalised":
        alive = reason.isna()
        reason[key.where(alive).duplicated(keep="first") & alive] = "duplicate_normalised"
    return reason


def clean(df: pd.DataFrame, p: CleanParams, source_name: str, raw_row: list[int] | None = None) -> CleanResult:
    """Pure core. `df` is the raw table, `raw_row` its rows' 1-based data rows in the file (default: 1..n);
    `source_name` names the file in messages."""
    wanted = [(p.text_column, "text_column"), (p.label_column, "label_column")]
    wanted += [(c, "keep_columns") for c in p.keep_columns]
    for col, key in wanted:
        if col not in df.columns:
            raise DataError(f"{source_name}: no column {col!r} (clean.{key}); columns are {list(df.columns)}")
    rows_in = len(df)
    if rows_in == 0:
        raise DataError(f"{source_name}: no data rows")

    raw_text = df[p.text_column]
    # Row numbers as a user sees them in the file: 1-based data rows (the header is not counted).
    row_no = pd.Index(raw_row if raw_row is not None else range(1, rows_in + 1))
    ids = content_ids(raw_text)
    labels, label_missing = _labels(df[p.label_column], row_no, p, source_name)
    texts, non_string, removed = _texts(raw_text, row_no, p, source_name)
    frame = pd.DataFrame({"id": ids, "raw_row": row_no, "text": texts, "label": labels})
    for c in p.keep_columns:
        frame[c] = df[c].to_numpy()
    reason = drop_reasons(frame, p, label_missing, non_string)

    keep = reason.isna()
    kept = frame[keep].assign(source_id=frame["id"][keep], origin="original")
    # raw_row: the 1-based data row of the raw file, so every row (and every variant of it) points at its line.
    kept = kept[["id", "source_id", "origin", "text", "label", "raw_row", *p.keep_columns]].reset_index(drop=True)
    raw_as_text = raw_text.where(raw_text.isna(), raw_text.astype(str))
    dropped = pd.DataFrame({
        "id": frame["id"][~keep], "raw_row": frame["raw_row"][~keep], "reason": reason[~keep],
        "text": raw_as_text[~keep.to_numpy()].to_numpy(), "label": frame["label"][~keep],
    }).reset_index(drop=True)

    if kept["label"].nunique() < 2:
        raise DataError(
            f"{source_name}: after cleaning only {kept['label'].nunique()} class is left "
            f"({class_counts(kept['label'])}): a classifier needs at least two"
        )
    changed = [r > CHANGED_CHARS for r in removed]
    return CleanResult(kept=kept, dropped=dropped, rows_in=rows_in, text_changed_rows=int(sum(changed)),
                       chars_removed=int(sum(max(r, 0) for r in removed)))


def stage_metrics(result: CleanResult) -> dict:
    return {
        "rows_in": result.rows_in,
        "rows_out": len(result.kept),
        "restored_rows": result.restored_rows,
        "bare_cr_replaced": result.bare_cr,
        **drop_counts(result.dropped),
        "text_changed_rows": result.text_changed_rows,
        "chars_removed": result.chars_removed,
        "feedback_rows_in": result.feedback_rows,
        "feedback_rows_kept": int((result.kept["raw_row"] < 0).sum()),
        "per_class": class_counts(result.kept["label"]),
    }


def with_feedback(df: pd.DataFrame, raw_row: list[int], feedback: pd.DataFrame, p: CleanParams
                  ) -> tuple[pd.DataFrame, list[int]]:
    """The raw table with the feedback rows after it (text and label into the raw file's columns), and their row
    numbers: -k for data row k of the feedback file, so every row still points at its line."""
    fb = pd.DataFrame({p.text_column: feedback["text"].to_numpy(), p.label_column: feedback["label"].to_numpy()})
    for c in p.keep_columns:
        fb[c] = None
    return pd.concat([df, fb], ignore_index=True), list(raw_row) + [-(k + 1) for k in range(len(fb))]


def clean_file(path: str, params: Params, feedback: str | None = None) -> CleanResult:
    """What the stage does short of writing: read the raw file (and the feedback file `ingest` appends to), run
    `check`'s data checks on the raw file (every problem at once), clean both together, and check that each class
    can be split, before any heavy stage runs."""
    p = params.clean
    raw = read_records(path, p)
    log.info("read %d rows from %s", len(raw.df), path)
    if raw.restored_rows or raw.bare_cr:
        log.warning("%s: restored %d row(s) from quote-swallowed records, replaced %d bare carriage return(s)",
                    path, raw.restored_rows, raw.bare_cr)
    report = raw_table_problems(raw.df, raw.raw_row, path, params)
    for note in report.notes:
        log.info("%s", note)
    if report.errors:
        raise DataError(f"{len(report.errors)} problem(s):\n  " + "\n  ".join(report.errors))
    df, rows = raw.df, raw.raw_row
    fb = read_feedback(Path(feedback)) if feedback else None
    if fb is not None and len(fb):
        log.info("read %d feedback rows from %s", len(fb), feedback)
        df, rows = with_feedback(df, rows, fb, p)
    result = clean(df, p, path, rows)
    result.restored_rows, result.bare_cr = raw.restored_rows, raw.bare_cr
    result.feedback_rows = 0 if fb is None else len(fb)
    problems = class_size_problems(result.kept["label"], params, path, result.dropped)
    if problems:
        raise DataError("\n  ".join(problems))
    return result
