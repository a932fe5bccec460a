"""The prediction log: every text a served model scored, as append-only Parquet files, written off the request path.

Each scored text is one row: time (UTC), request id, model md5, status, prediction, confidence, `p_<label>` per
class, the text's length, its SHA-256, and the text itself unless logging text is off. Rows go into a bounded queue
(`log()` never blocks: when the queue is full the rows are counted as dropped, never fail a request) and a
background thread writes them out, one file per `rotate_rows` rows or `rotate_seconds`, whichever comes first.
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

log = logging.getLogger(__name__)

PREFIX = "predictions-"


class PredictionLog:
    def __init__(self, folder: str | Path, label_names: list[str], model_md5: str, log_text: bool = True,
                 rotate_rows: int = 10_000, rotate_seconds: float = 10.0, queue_rows: int = 100_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.label_names, self.model_md5, self.log_text = label_names, model_md5, log_text
        self.rotate_rows, self.rotate_seconds = rotate_rows, rotate_seconds
        self.queue: queue.Queue = queue.Queue(maxsize=queue_rows)
        self.logged = self.dropped = self.files = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def rows(self, request_id: str, texts: list, results: list[dict]) -> list[dict]:
        """The log rows of one request: its texts and what the model said of each (Scorer.score's results)."""
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        out = []
        for text, r in zip(texts, results):
            s = text if isinstance(text, str) else ""
            row = {"time": now, "request_id": request_id, "model_md5": self.model_md5, "status": r["status"],
                   "prediction": r["label"], "confidence": r["confidence"], "text_chars": len(s),
                   "text_sha256": hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest(),
                   "text": s if self.log_text else None}
            probs = r["probabilities"] or {}
            row.update({f"p_{n}": probs.get(n) for n in self.label_names})
            out.append(row)
        return out

    def log(self, rows: list[dict]) -> None:
        """Queue rows for writing; never blocks (a full queue drops them, counted)."""
        for row in rows:
            try:
                self.queue.put_nowait(row)
            except queue.Full:
                with self._lock:
                    self.dropped += 1

    def status(self) -> dict:
        return {"folder": str(self.folder), "logged": self.logged, "dropped": self.dropped, "files": self.files,
                "queued": self.queue.qsize()}

    def close(self) -> None:
        """Write every queued row, then stop the writer."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        buffer: list[dict] = []
        started = time.monotonic()
        while True:
            try:
                buffer.append(self.queue.get(timeout=0.1))
            except queue.Empty:
                pass
            stopping = self._stop.is_set() and self.queue.empty()
            due = buffer and (len(buffer) >= self.rotate_rows or time.monotonic() - started >= self.rotate_seconds)
            if buffer and (due or stopping):
                self._write(buffer)
                buffer, started = [], time.monotonic()
            if not buffer:
                started = time.monotonic()  # a file's clock starts with its first row
            if stopping:
                return

    def _write(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [("time", pa.string()), ("request_id", pa.string()), ("model_md5", pa.string()),
                  ("status", pa.string()), ("prediction", pa.string()), ("confidence", pa.float64()),
                  ("text_chars", pa.int64()), ("text_sha256", pa.string()), ("text", pa.string())]
        fields += [(f"p_{n}", pa.float64()) for n in self.label_names]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{PREFIX}{stamp}-{os.getpid()}-{self.files:06d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        try:
            pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), tmp)
            os.replace(tmp, self.folder / name)  # complete or absent: a reader never sees half a file
        except Exception:  # noqa: BLE001 - a log that cannot be written must not take the server down
            log.exception("prediction log: %d rows could not be written to %s", len(rows), self.folder)
            with self._lock:
                self.dropped += len(rows)
            return
        with self._lock:
            self.logged += len(rows)
            self.files += 1


def read_log(folder: str | Path) -> "pd.DataFrame":  # noqa: F821 - pandas imported lazily
    """Every complete log file in `folder`, oldest first, as one table."""
    import pandas as pd

    files = sorted(Path(folder).glob(f"{PREFIX}*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
