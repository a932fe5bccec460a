"""The feedback file: rows labelled from served traffic, which `finetune ingest` appends to and `clean` reads after
the raw file (dvc.yaml's `feedback` var). One row per labelled text, with where it came from."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.io import DataError
from pipeline.core.params import CleanParams, Params

FEEDBACK_COLUMNS = ["text", "label", "request_id", "time", "model_md5", "ingested_at", "source"]


def read_feedback(path: Path) -> pd.DataFrame:
    """The feedback file, or any labelled CSV (an absent file is an empty one); it needs `text` and `label`."""
    if not path.is_file():
        return pd.DataFrame(columns=FEEDBACK_COLUMNS)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason})") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as CSV: {e}") from None
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; a feedback file has {FEEDBACK_COLUMNS}")
    return df


def known_labels(p: CleanParams, clean_table: Path) -> list[str]:
    """The classes a labelled text may have: the cleaned data's, else params' clean.label_names."""
    if clean_table.is_file():
        return sorted(pd.read_parquet(clean_table, columns=["label"])["label"].unique())
    names = list(p.label_names.values())
    if not names:
        raise DataError(f"no known classes: run `dvc repro` first (no {clean_table}) or set clean.label_names")
    return sorted(names)


def stored_label(value: object, known: list[str], where: str) -> str:
    """A labelled text's label as `ingest` writes it, one of the data's classes."""
    label = str(value).strip()
    if label not in known:
        raise DataError(f"{where} has label {value!r}, not one of the data's classes {known}")
    return label


def text_key(text: str, p: CleanParams) -> str:
    """A text as clean compares rows (normalised, dedup key)."""
    from pipeline.core.text import dedup_key, normalise_text

    return dedup_key(normalise_text(text, p))


def raw_keys(raw_path: Path, params: Params) -> set[str]:
    """The raw file's texts as clean compares them."""
    from pipeline.core.records import read_records

    p = params.clean
    return {text_key(t, p) for t in read_records(str(raw_path), p).df[p.text_column] if isinstance(t, str)}
