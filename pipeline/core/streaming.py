"""Stream a table through a function chunk by chunk into another table: predict's and explain's file mode.

Rows keep their input order and columns; each gets `row` (its 1-based number), `status` (`ok`, or why it was not
answered) and the answer's columns. Memory stays flat however long the file is; the output appears whole or not at
all (written to a temporary file, renamed at the end), with `<output>.meta.json` beside it saying what produced it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from pipeline.core.io import DataError, atomic_path, detect_format, iter_chunks

# (texts of a chunk, the 0-based index of its first row) -> (status per text, output columns)
Answer = Callable[[list[Any], int], tuple[list[str], dict[str, Any]]]


class ChunkWriter:
    """Appends scored chunks to a CSV/TSV/JSONL/Parquet file (Parquet: one row group per chunk)."""

    def __init__(self, path: Path, fmt: str, metadata: dict) -> None:
        self.path, self.fmt, self.metadata = path, fmt, metadata
        self._pq = None
        self._first = True

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                schema = table.schema.with_metadata({b"finetune_pipeline": json.dumps(self.metadata).encode()})
                self._pq = pq.ParquetWriter(self.path, schema)
            self._pq.write_table(table.cast(self._pq.schema))
        elif self.fmt == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                df.to_json(f, orient="records", lines=True, force_ascii=False)
        else:
            df.to_csv(self.path, mode="a", header=self._first, index=False, sep="\t" if self.fmt == "tsv" else ",")
        self._first = False

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


def stream_file(src: Path, dest: Path, text_column: str, answer: Answer, meta: dict, fmt: str = "auto",
                out_fmt: str = "auto", encoding: str = "utf-8", chunk_rows: int = 10000, what: str = "rows") -> dict:
    """`answer` applied to `src`'s `text_column`, chunk by chunk, into `dest`; returns `meta` with the row count and
    the count of each status."""
    from tqdm.auto import tqdm

    out_fmt = detect_format(dest, out_fmt)
    counts: dict[str, int] = {}
    rows = 0
    with atomic_path(dest) as tmp:
        writer = ChunkWriter(tmp, out_fmt, meta)
        try:
            bar = tqdm(desc=what, unit="row", mininterval=2)
            for chunk in iter_chunks(src, fmt, encoding, chunk_rows):
                if text_column not in chunk.columns:
                    raise DataError(f"{src}: no column {text_column!r} (--text-column); columns are "
                                    f"{list(chunk.columns)}")
                status, columns = answer(chunk[text_column].tolist(), rows)
                out = chunk.reset_index(drop=True).copy()
                if out_fmt == "parquet":  # one schema for every row group: the input columns as text
                    out = out.astype({c: "string" for c in out.columns if out[c].dtype == object})
                out["row"] = range(rows + 1, rows + len(out) + 1)
                out["status"] = status
                for column, values in columns.items():
                    out[column] = values
                writer.write(out)
                for s in status:
                    counts[s] = counts.get(s, 0) + 1
                rows += len(out)
                bar.update(len(out))
            bar.close()
        finally:
            writer.close()
        if rows == 0:
            raise DataError(f"{src}: no data rows")
    meta = {**meta, "rows": rows, "status": counts}
    with atomic_path(Path(str(dest) + ".meta.json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
