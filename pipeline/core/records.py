"""Records that a CSV/TSV reader got wrong: bare carriage returns, and quote-swallowed records.

A stray `"` at the start of a field opens a quoted field that the reader closes only at the next `"`, possibly
hundreds of lines later: every record in between is folded into one text with one label, while the field count
stays valid, so no reader complains. The bundled SMS file has 8 such records. The signature is a field that spans
lines where the inner lines are themselves records: parsed with the file's separator they have the header's field
count and a known label, or they are `label<TAB>text` (the layout of the corpus the file was converted from).

A bare `\\r` (not part of `\\r\\n`) in an unquoted field is a line break to every CSV reader, so one record
becomes two, the second without a label.

`clean.multiline_records` chooses: `error` (default) stops naming the file and the line; `recover` splits the
swallowed records back into rows (every restored row is counted in clean's metrics) and turns bare `\\r` into
spaces; `allow` keeps what the reader parsed (for data whose texts really contain such lines).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.core.io import DataError

if TYPE_CHECKING:
    from pipeline.core.params import CleanParams

@dataclass
class Swallowed:
    row: int  # 0-based index in the parsed frame
    column: str
    records: int  # whole records folded into the field


def known_labels(labels: pd.Series, label_names: dict[str, str]) -> set[str]:
    """Raw label values as written in the file, plus the names they map to (a file converted from another
    corpus may carry names where the rest of the file has codes)."""
    seen = {str(x).strip() for x in labels.dropna().unique()}
    return {x for x in seen | set(label_names) | set(label_names.values()) if x}


def _as_record(line: str, sep: str, header: list[str], text_column: str, label_column: str,
               known: set[str]) -> dict | None:
    """The record `line` holds if it reads as a whole record of the file, or as `label<TAB>text`; else None."""
    fields = next(csv.reader([line], delimiter=sep), [])
    if len(fields) == len(header) and fields[header.index(label_column)].strip() in known:
        return dict(zip(header, fields))
    if "\t" in line:
        label, _, text = line.partition("\t")
        if label.strip() in known:
            return {c: None for c in header} | {text_column: text, label_column: label.strip()}
    return None


def find_swallowed(df: pd.DataFrame, text_column: str, label_column: str, known: set[str],
                   sep: str) -> list[Swallowed]:
    """Every field that spans lines with whole records among its inner lines."""
    header = [str(c) for c in df.columns]
    found = []
    for col in df.columns:
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        for i in values.index[values.astype(str).str.contains("\n", regex=False, na=False)]:
            n = sum(_as_record(line, sep, header, text_column, label_column, known) is not None
                    for line in str(values.at[i]).split("\n")[1:])
            if n:
                found.append(Swallowed(int(i), str(col), n))
    return found


def _unquote(text: str) -> str:
    """The stray quote that caused the accident opens (or closes) a text without its partner: drop it."""
    if text.count('"') % 2 == 1:
        text = text[1:] if text.startswith('"') else text[:-1] if text.endswith('"') else text
    return text


def recover(df: pd.DataFrame, raw_row: list[int], text_column: str, label_column: str, known: set[str],
            sep: str, found: list[Swallowed]) -> tuple[pd.DataFrame, list[int], int]:
    """Split every swallowed record back into rows. Returns (frame, raw_row per row, rows restored).

    The host record keeps the lines up to the first inner record; each inner record becomes a row, with the lines
    after it that are not records (real line breaks) still part of its text. A restored row's raw_row is its host
    record's (the row the reader saw), so it still points at that place in the file."""
    header = [str(c) for c in df.columns]
    by_row = {s.row: s for s in found}
    rows, rows_at, restored = [], [], 0
    for i, rec in enumerate(df.to_dict("records")):
        s = by_row.get(i)
        if s is None:
            rows.append(rec)
            rows_at.append(raw_row[i])
            continue
        lines = str(rec[s.column]).split("\n")
        pieces, current, kept = [], dict(rec), [lines[0]]
        for line in lines[1:]:
            inner = _as_record(line, sep, header, text_column, label_column, known)
            if inner is None:
                kept.append(line)
                continue
            pieces.append(current | {s.column: _unquote("\n".join(kept))})
            current, kept = inner, [inner[s.column] or ""]
        pieces.append(current | {s.column: _unquote("\n".join(kept))})
        rows.extend(pieces)
        rows_at.extend([raw_row[i]] * len(pieces))
        restored += len(pieces) - 1
    return pd.DataFrame(rows, columns=df.columns), rows_at, restored


@dataclass
class RawTable:
    df: pd.DataFrame
    name: str  # the raw file's name (or Hub source), for messages
    raw_row: list[int]  # 1-based data row of the raw file for each row of df
    restored_rows: int = 0  # rows split back out of quote-swallowed records
    bare_cr: int = 0  # bare carriage returns turned into spaces


def read_records(source: str, p: CleanParams) -> RawTable:
    """Read the raw table with clean's params and apply `clean.multiline_records` (see the module docstring)."""
    from pipeline.core.io import detect_format, read_raw

    df, name, bare = read_raw(source, p.format, p.encoding, p.multiline_records)
    raw_row = list(range(1, len(df) + 1))
    fmt = detect_format(Path(source), p.format)
    if fmt not in ("csv", "tsv") or p.multiline_records == "allow" or p.label_column not in df.columns:
        return RawTable(df, name, raw_row, 0, bare)
    sep = "\t" if fmt == "tsv" else ","
    known = known_labels(df[p.label_column], p.label_names)
    found = find_swallowed(df, p.text_column, p.label_column, known, sep)
    if not found:
        return RawTable(df, name, raw_row, 0, bare)
    total = sum(s.records for s in found)
    if p.multiline_records == "error":
        first = found[0]
        start = str(df.at[first.row, first.column]).split("\n", 1)[0][:60]
        raise DataError(
            f"{source}: data row {first.row + 1} (column {first.column!r}, starting {start!r}) has {first.records} "
            f"whole record(s) folded into it, as a stray \" does; {len(found)} such row(s) hide {total} record(s) "
            "in all. Fix the quoting in the file, or set clean.multiline_records: recover to split them back into "
            "rows (counted in clean's metrics), or allow to keep the fields as read"
        )
    df, raw_row, restored = recover(df, raw_row, p.text_column, p.label_column, known, sep, found)
    return RawTable(df, name, raw_row, restored, bare)
