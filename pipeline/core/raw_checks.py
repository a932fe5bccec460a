"""A raw table's problems before cleaning: columns, empty and unknown labels, label names meant for another file,
non-string texts. The clean stage runs them first (and stops on an error); `finetune check` lists them with
everything else. Pure: the table is already read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.params import CleanParams, Params
from pipeline.core.text import raw_label_key

# The label names params.yaml ships with: the bundled SMS file's. On another file with 0/1 labels they would
# silently call its classes "ham" and "spam".
BUNDLED_RAW = "data/raw/sms-spam.csv"
BUNDLED_LABEL_NAMES = {"0": "ham", "1": "spam"}


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"ERROR {e}" for e in self.errors] + [f"note  {n}" for n in self.notes]
        head = (f"{len(self.errors)} error(s), {len(self.notes)} note(s)" if lines else "no problems found")
        return "\n".join([head, *lines])


def raw_table_problems(df: pd.DataFrame, raw_row: list[int], source: str, params: Params) -> Report:
    """Every problem of a raw table that is already read, before cleaning (clean's params apply). Pure: no I/O.
    The clean stage runs it first; `finetune check` adds what needs the cleaned rows (drops, class sizes)."""
    rep = Report()
    p: CleanParams = params.clean
    missing = [f"{col!r} (clean.{key})" for col, key in
               [(p.text_column, "text_column"), (p.label_column, "label_column"),
                *[(c, "keep_columns") for c in p.keep_columns]] if col not in df.columns]
    if missing:
        rep.errors.append(f"{source}: no column {', '.join(missing)}; columns are {list(df.columns)}")
        return rep
    if df.empty:
        rep.errors.append(f"{source}: no data rows")
        return rep
    labels = df[p.label_column]
    empty = labels.isna() | labels.astype(str).str.strip().eq("")
    rows = pd.Series(raw_row)
    if empty.any():
        msg = (f"{source}: column {p.label_column!r} is empty in {int(empty.sum())} row(s), first at data row(s) "
               f"{rows[empty.to_numpy()].head(5).tolist()}")
        (rep.errors if p.missing_label == "error" else rep.notes).append(
            msg + ("; fix the file or set clean.missing_label: drop" if p.missing_label == "error" else
                   " (dropped and counted as missing_label)"))
    raw_labels = {raw_label_key(x) for x in labels[~empty]}
    if p.label_names and not raw_labels & set(p.label_names):
        rep.errors.append(f"clean.label_names: maps {sorted(p.label_names)} but the labels of {source} are "
                          f"{sorted(raw_labels)[:10]}; fix the keys or set label_names: {{}}")
    elif (p.label_names == BUNDLED_LABEL_NAMES and Path(source).name != Path(BUNDLED_RAW).name
          and raw_labels <= set(BUNDLED_LABEL_NAMES) and not p.confirm_label_names):
        rep.errors.append(f"clean.label_names: the bundled SMS names {BUNDLED_LABEL_NAMES} would rename the labels "
                          f"{sorted(raw_labels)} of {source}; set your own names, label_names: {{}} to keep them, "
                          "or clean.confirm_label_names: true if ham/spam is what they are")
    if p.allowed_labels:
        names = {p.label_names.get(x, x) for x in raw_labels}
        unknown = sorted(names - set(p.allowed_labels))
        if unknown:
            rep.errors.append(f"{source}: label(s) {unknown} not in clean.allowed_labels {p.allowed_labels}")
    texts = df[p.text_column]
    non_string = [not isinstance(t, str) and not pd.isna(t) for t in texts]
    if any(non_string):
        where = rows[pd.Series(non_string).to_numpy()].head(5).tolist()
        rep.notes.append(f"{source}: {sum(non_string)} non-string text(s) in column {p.text_column!r} (data rows "
                         f"{where}): dropped and counted as non_string_text")
    return rep
