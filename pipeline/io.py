"""Tables, metrics JSON and atomic writes shared by the stages.

Every output is written to a temporary file next to its destination and renamed into place, so an interrupted
stage never leaves a half-written file that DVC (or the next stage) could mistake for a result.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

log = logging.getLogger(__name__)

# The columns every interim table carries (row-level lineage + data).
LINEAGE_COLUMNS = ["id", "source_id", "origin", "text", "label"]


class DataError(ValueError):
    """Bad input data; the message names the file and, where it can, the row and column."""


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("PIPELINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def stage_args(description: str, *names: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `--name path` options for a stage; dvc.yaml passes every path, so none has a default."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml")
    for n in names:
        p.add_argument(f"--{n}", required=True)
    return p.parse_args(argv)


def stable_id(*parts: object) -> str:
    """A short, stable hash: the same parts give the same id on every machine and run."""
    h = hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()
    return h[:16]


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `dest`; on success it is renamed to `dest` (file or directory)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)) / (dest.name + suffix)
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.reset_index(drop=True).to_parquet(tmp, index=False)


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (run the upstream stage first: `dvc repro`)")
    df = pd.read_parquet(path)
    missing = [c for c in (columns or LINEAGE_COLUMNS) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def file_md5(path: str | Path) -> str:
    """The md5 DVC records in dvc.lock for a file (DVC 3 hashes the raw bytes)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def class_counts(labels: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(labels.value_counts().items())}


def drop_counts(dropped: pd.DataFrame) -> dict:
    """The `dropped` (per reason) and `dropped_total` entries of a stage's data metrics."""
    return {"dropped": class_counts(dropped["reason"]), "dropped_total": len(dropped)}


# ---------------------------------------------------------------------------------------------- raw input
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower().removesuffix(".gz")
    for ext, f in FORMATS.items():
        if name.endswith(ext):
            return f
    raise DataError(f"{path}: cannot tell the format from the extension; set clean.format (csv, tsv, jsonl, parquet)")


def read_raw_table(source: str, fmt: str = "auto", encoding: str = "utf-8") -> tuple[pd.DataFrame, str]:
    """Read a user's raw table. Returns (frame with string columns, a name used to derive stable row ids).

    `source` is a path, or `hf:<dataset>[:<config>]:<split>` for a Hugging Face Hub dataset (needs internet).
    """
    if source.startswith("hf:"):
        return _read_hub_dataset(source), source
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    fmt = detect_format(path, fmt)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file: {e}") from e
        return df, path.name
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        import gzip

        raw = gzip.decompress(raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            f"set clean.encoding (e.g. latin-1 or cp1252) to the file's encoding"
        ) from None
    except LookupError:
        raise DataError(f"clean.encoding: unknown encoding {encoding!r}") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        if fmt == "jsonl":
            df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        else:
            df = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                             na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as {fmt}: {e}") from e
    return df, path.name


def _read_hub_dataset(source: str) -> pd.DataFrame:
    parts = source.split(":")[1:]
    if len(parts) not in (2, 3):
        raise DataError(f"{source}: expected hf:<dataset>:<split> or hf:<dataset>:<config>:<split>")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name, bad split: all surface as different exception types
        raise DataError(f"{source}: cannot load Hub dataset {name!r} (split {split!r}): {e}") from e
    return ds.to_pandas()
