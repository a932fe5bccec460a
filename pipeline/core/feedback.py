"""The feedback file: rows labelled from served traffic, which `finetune ingest` appends to and `clean` reads after
the raw file (dvc.yaml's `feedback` var). One row per labelled text, with where it came from."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.io import DataError

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
