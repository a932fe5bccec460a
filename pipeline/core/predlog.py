"""The prediction log: every text a served model scored, as append-only Parquet files, written off the request path.

Each scored text is one row: time (UTC), request id, model md5, status, the text's length, its SHA-256, the text
itself unless logging text is off, and what the model said of it, in the model's own columns (`log_fields` and
`log_schema` of pipeline/core/scoring.py and token_scoring.py): `prediction` and `confidence` always (a class and
its probability; a token model's entity types joined by `|` and their mean score), then a text classifier's
`p_<label>` per class, a token model's `entities` (JSON spans) and `n_entities`. Requests go into a bounded
queue (`log_request()` never blocks: when `queue_rows` rows are waiting, more are counted as dropped, never fail a
request) and a background thread builds the rows and writes them out, one file per `rotate_rows` rows or
`rotate_seconds`, whichever comes first.
A file is written under a temporary name and renamed when complete, so every `predictions-*.parquet` in the folder
reads, even after the server is killed; a SIGKILL loses only the rows not yet written (at most one rotation's
worth), and a clean shutdown (`close()`, which serve calls on SIGTERM/SIGINT) loses nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

PREFIX = "predictions-"


def text_sha256(text: str) -> str:
    """The hash a log keeps of a text (and monitor matches texts by)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class PredictionLog:
    def __init__(self, folder: str | Path, fields: Callable[[dict], dict[str, Any]], schema: list[tuple[str, str]],
                 model_md5: str, log_text: bool = True, rotate_rows: int = 10_000, rotate_seconds: float = 10.0,
                 queue_rows: int = 100_000) -> None:
        """`fields(result)`: the model's columns for one scored text (None where it could not be scored), named and
        typed (pyarrow type names) by `schema`."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fields, self.schema, self.model_md5, self.log_text = fields, schema, model_md5, log_text
        self.rotate_rows, self.rotate_seconds, self.queue_rows = rotate_rows, rotate_seconds, queue_rows
        # One item per request, not per row, and nothing computed on the request path: the server's event loop
        # only appends a tuple; hashing, timestamps and the columns are the writer thread's work.
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.queued = self.logged = self.dropped = self.files = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log_request(self, request_id: str, texts: list, results: list[dict]) -> None:
        """Queue one request's texts and what the model said of each (PackagedModel.score's results). Never blocks: when
        `queue_rows` rows are already waiting, these are dropped and counted."""
        n = len(texts)
        with self._lock:
            if self.queued + n > self.queue_rows:
                self.dropped += n
                return
            self.queued += n
        self.queue.put((time.time(), request_id, texts, results))

    def status(self) -> dict:
        return {"folder": str(self.folder), "logged": self.logged, "dropped": self.dropped, "files": self.files,
                "queued": self.queued}

    def close(self) -> None:
        """Write every queued row, then stop the writer."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        buffer: list[tuple] = []
        rows = 0
        started = time.monotonic()
        while True:
            # Wake a few times a second and take everything queued, not once per request: a thread that wakes per
            # item asks for the GIL a thousand times a second and slows the server's event loop.
            stopping = self._stop.wait(0.2)
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if not buffer:
                    started = time.monotonic()  # a file's clock starts with its first row
                buffer.append(item)
                rows += len(item[2])
                if rows >= self.rotate_rows:  # a file holds rotate_rows rows (or one request's more) at most
                    self._write(buffer, rows)
                    buffer, rows = [], 0
            due = buffer and time.monotonic() - started >= self.rotate_seconds
            if buffer and (due or stopping):
                self._write(buffer, rows)
                buffer, rows = [], 0
            if stopping:
                return

    def columns(self, items: list[tuple]) -> dict[str, list]:
        """The log's columns for queued requests: one row per text."""
        cols: dict[str, list] = {k: [] for k in ("time", "request_id", "model_md5", "status", "text_chars",
                                                 "text_sha256", "text")}
        model_cols: dict[str, list] = {name: [] for name, _ in self.schema}
        for when, request_id, texts, results in items:
            stamp = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="microseconds")
            for text, r in zip(texts, results):
                s = text if isinstance(text, str) else ""
                cols["time"].append(stamp)
                cols["request_id"].append(request_id)
                cols["status"].append(r["status"])
                cols["text_chars"].append(len(s))
                cols["text_sha256"].append(text_sha256(s))
                cols["text"].append(s if self.log_text else None)
                row = self.fields(r)
                for name in model_cols:
                    model_cols[name].append(row.get(name))
        cols["model_md5"] = [self.model_md5] * len(cols["time"])
        return {**cols, **model_cols}

    def _write(self, items: list[tuple], rows: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [("time", pa.string()), ("request_id", pa.string()), ("model_md5", pa.string()),
                  ("status", pa.string()), ("text_chars", pa.int64()), ("text_sha256", pa.string()),
                  ("text", pa.string())]
        fields += [(name, getattr(pa, arrow_type)()) for name, arrow_type in self.schema]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{PREFIX}{stamp}-{os.getpid()}-{self.files:06d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        try:
            pq.write_table(pa.Table.from_pydict(self.columns(items), schema=pa.schema(fields)), tmp)
            os.replace(tmp, self.folder / name)  # complete or absent: a reader never sees half a file
        except Exception:  # noqa: BLE001 - a log that cannot be written must not take the server down
            log.exception("prediction log: %d rows could not be written to %s", rows, self.folder)
            with self._lock:
                self.dropped += rows
                self.queued -= rows
            return
        with self._lock:
            self.logged += rows
            self.queued -= rows
            self.files += 1


def read_log(folder: str | Path) -> "pd.DataFrame":  # noqa: F821 - pandas imported lazily
    """Every complete log file in `folder`, oldest first, as one table."""
    import pandas as pd

    files = sorted(Path(folder).glob(f"{PREFIX}*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
