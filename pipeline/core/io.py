"""Tables, metrics JSON and atomic writes shared by the stages.

Every output is written to a temporary file next to its destination and renamed into place, so an interrupted
stage never leaves a half-written file that DVC (or the next stage) could mistake for a result.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

log = logging.getLogger(__name__)

# The columns every interim table carries (row-level lineage + data).
LINEAGE_COLUMNS = ["id", "source_id", "origin", "text", "label"]


class KnownError(Exception):
    """A problem with the user's input, params, model or output (not a bug): reported in one line by run_stage."""


class DataError(KnownError, ValueError):
    """Bad input data; the message names the file and, where it can, the row and column."""


class OutputError(KnownError, OSError):
    """An output cannot be written (read-only folder, full disk); the message names the output path."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): a known bad input, param, model or output ends with one line naming the culprit and
    exit status 1; the traceback only with PIPELINE_LOG_LEVEL=DEBUG. Anything else is a bug and keeps its
    traceback."""
    from pipeline.core.params import ParamsError

    try:
        main()
    except (KnownError, ParamsError) as e:
        setup_logging()
        log.debug("traceback", exc_info=True)
        log.error("%s", e)
        raise SystemExit(1) from None


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("PIPELINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def stage_args(description: str, *names: str, argv: list[str] | None = None,
               optional: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse `--name path` options for a stage; dvc.yaml passes every path, so none has a default (an `optional`
    one is None when not given)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml")
    for n in names:
        p.add_argument(f"--{n}", required=True)
    for n in optional:
        p.add_argument(f"--{n}", default=None)
    return p.parse_args(argv)


def stable_id(*parts: object) -> str:
    """A short, stable hash: the same parts give the same id on every machine and run."""
    h = hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()
    return h[:16]


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `dest`; on success it is renamed to `dest` (file or directory)."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)) / (dest.name + suffix)
    except OSError as e:
        raise OutputError(f"{dest}: cannot write here ({e.strerror}); check the folder's permissions and free space") \
            from e
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(tmp, dest)
    except OSError as e:
        if isinstance(e, OutputError) or e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        raise OutputError(f"{dest}: cannot write it ({e.strerror}); nothing was left half-written") from e
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


LINEAGE_FILE = "lineage.json"  # in every model folder: the data, params and choices that made the model


def read_lineage(folder: str | Path) -> dict:
    return json.loads((Path(folder) / LINEAGE_FILE).read_text())


def write_lineage(folder: str | Path, record: dict) -> None:
    """The record as every stage writes it (sorted keys, so the same record is the same bytes)."""
    (Path(folder) / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


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


def iter_chunks(path: Path, fmt: str, encoding: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The input in chunks of `chunk_rows` rows (pandas/pyarrow readers; never the whole file in memory)."""
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    fmt = detect_format(path, fmt)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        elif fmt == "jsonl":
            yield from pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False, encoding=encoding)
        else:
            yield from pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", chunksize=chunk_rows, dtype=str,
                                   keep_default_na=False, na_values=[""], encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {encoding} ({e.reason}); pass --encoding") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as {fmt}: {e}") from None


def read_raw_table(source: str, fmt: str = "auto", encoding: str = "utf-8", bare_cr: str = "error"
                   ) -> tuple[pd.DataFrame, str]:
    """Read a user's raw table. Returns (frame with string columns, the file's name for messages).

    `bare_cr` is clean.multiline_records' policy for a bare carriage return in a CSV/TSV
    (handle_bare_cr).
    """
    df, name, _ = read_raw(source, fmt, encoding, bare_cr)
    return df, name


def read_raw(source: str, fmt: str, encoding: str, bare_cr: str) -> tuple[pd.DataFrame, str, int]:
    """read_raw_table, also returning how many bare carriage returns were replaced."""
    if source.startswith("hf:"):
        raise DataError(f"{source}: a Hub dataset is fetched first, at a pinned revision, into a file DVC versions: "
                        f"`finetune fetch {source} --revision <tag|sha> --output data/raw/<name>.parquet`, then point "
                        "`raw` in dvc.yaml at that file")
    path = _existing_file(source)
    fmt = detect_format(path, fmt)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file: {e}") from e
        return df, path.name, 0
    text = _decode(path, _text_bytes(path, fmt), encoding)
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    n_cr = 0
    if fmt == "jsonl":
        _check_jsonl_lines(path, text)
    else:
        _check_header(path, text, fmt)
        text, n_cr = handle_bare_cr(text, str(path), bare_cr)
    try:
        if fmt == "jsonl":
            df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        else:
            df = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                             na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as {fmt}: {e}") from e
    return df, path.name, n_cr


def _existing_file(source: str) -> Path:
    path = Path(source)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; point `raw` in dvc.yaml at the data file inside it")
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    return path


def _text_bytes(path: Path, fmt: str) -> bytes:
    """The bytes of a CSV/TSV/JSONL file, gunzipped; a zip or Parquet file under a text name is an error."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e}); re-create it with gzip, or unpack it") from None
    if raw[:4] == b"PK\x03\x04":
        raise DataError(f"{path}: is a zip archive, not {fmt.upper()}: unzip it and point `raw` at the file inside")
    if raw[:4] == b"PAR1":
        raise DataError(f"{path}: is a Parquet file: rename it to .parquet or set clean.format: parquet")
    return raw


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            f"set clean.encoding (e.g. latin-1 or cp1252) to the file's encoding"
        ) from None
    except LookupError:
        raise DataError(f"clean.encoding: unknown encoding {encoding!r}") from None


_BARE_CR = re.compile(r"\r(?!\n)")


def bare_cr_positions(text: str) -> list[int]:
    """Offsets of bare carriage returns *outside* quoted fields: the ones a CSV reader takes for a record break.
    Inside a quoted field a \r is content (a well-quoted file is fine); a file whose only line ends are \r (old
    Mac) has no such problem either. Quote parity before each \r tells inside from outside (an escaped `""` keeps
    the parity)."""
    if "\n" not in text:
        return []
    crs = [m.start() for m in _BARE_CR.finditer(text)]
    if not crs:
        return []
    import bisect

    quotes = [m.start() for m in re.finditer('"', text)]
    return [p for p in crs if bisect.bisect_left(quotes, p) % 2 == 0]


def handle_bare_cr(text: str, source: str, policy: str) -> tuple[str, int]:
    """Apply the policy to bare CRs in a CSV/TSV text before parsing; returns (text, how many were replaced)."""
    if policy == "allow" or "\r" not in text:
        return text, 0
    positions = bare_cr_positions(text)
    if not positions:
        return text, 0
    if policy == "error":
        line = text.count("\n", 0, positions[0]) + 1
        raise DataError(
            f"{source}: line {line} has a bare carriage return (\\r) inside an unquoted field ({len(positions)} in the "
            "file); CSV readers take it for a line break and split the record. Quote those fields or remove the \\r, "
            "or set clean.multiline_records: recover (each such \\r becomes a space)"
        )
    chars = list(text)
    for p in positions:
        chars[p] = " "
    return "".join(chars), len(positions)


def _check_jsonl_lines(path: Path, text: str) -> None:
    """pandas reports a JSONL error as a character offset; find the line and say what is wrong with it."""
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i} is not valid JSON ({e.msg} at column {e.colno}): "
                            f"{line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {i} is a JSON {type(obj).__name__}, not an object with named fields")


def _check_header(path: Path, text: str, fmt: str) -> None:
    import csv

    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    header = next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ","), [])
    if fmt == "csv" and len(header) == 1 and "\t" in first:
        raise DataError(f"{path}: the header has tabs but no commas: the file looks tab-separated; "
                        "set clean.format: tsv (or rename it .tsv)")
    seen, dupes = set(), []
    for name in (h.strip() for h in header):
        if name in seen:
            dupes.append(name)
        seen.add(name)
    if dupes:
        raise DataError(f"{path}: the header names column(s) {sorted(set(dupes))} more than once; rename them "
                        "(pandas would silently read the first and rename the others)")
