"""HTTP plumbing of `finetune serve` (pipeline/commands/serve.py says what the server does): one-line JSON errors,
the dynamic batcher, the body limit, the counters every worker process shares, and how many workers a machine runs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any, Callable

from pydantic import BaseModel

log = logging.getLogger(__name__)


class ErrorResponse(BaseModel):
    error: str


ERRORS = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


def install_error_handlers(app: Any) -> None:
    """Every error a one-line JSON `error` with a 4xx/5xx status, never a traceback or FastAPI's nested detail."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        if first.get("type") == "json_invalid":
            return error(400, "malformed JSON body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Any:
        log.exception("unexpected error")
        return error(500, f"internal error ({type(exc).__name__}); see the server log")


def request_problem(texts: list[str], max_texts: int, max_chars: int) -> Any:
    """The error response for a request over the limits, or None."""
    if not texts:
        return error(422, "texts: must hold at least one text")
    if len(texts) > max_texts:
        return error(413, f"texts: {len(texts)} texts, more than the limit of {max_texts} per request")
    long = [i for i, t in enumerate(texts) if len(t) > max_chars]
    if long:
        return error(413, f"texts[{long[0]}]: {len(texts[long[0]])} characters, more than the limit of {max_chars}")
    return None


class Batcher:
    """Gathers the texts of requests that arrive together into one `score_batch` call on a worker thread.

    One batch runs at a time, with all the cores; requests arriving meanwhile queue, and the next batch takes
    them in arrival order up to `max_batch` texts, after waiting at most `wait_s` from the first for more to come.
    `score_batch` maps a list of texts to one result per text; if it raises, every request of that batch gets the
    error (the server's 500), and the next batch runs as usual."""

    def __init__(self, score_batch: Callable[[list], list], max_batch: int, wait_s: float,
                 on_batch: Callable[..., None] | None = None) -> None:
        self.score_batch, self.max_batch, self.wait_s = score_batch, max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held: tuple | None = None  # a request that did not fit the last batch: first in the next
        self.task: asyncio.Task | None = None
        self.limiter: Any = None
        self.on_batch = on_batch  # counts each batch (Counters.add): GET /model sums every worker's

    def start(self) -> None:
        """Start the worker in the running event loop (the server's lifespan)."""
        from anyio import CapacityLimiter

        self.limiter = CapacityLimiter(1)  # one batch at a time, on a thread of its own
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def submit(self, texts: list) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _gather(self) -> list[tuple[list, asyncio.Future]]:
        first, self.held = self.held or await self.queue.get(), None
        batch = [first]
        n = len(first[0])
        deadline = time.perf_counter() + self.wait_s
        while n < self.max_batch:
            try:
                item = self.queue.get_nowait() if self.queue.qsize() else await asyncio.wait_for(
                    self.queue.get(), max(0.0, deadline - time.perf_counter()))
            except (asyncio.TimeoutError, TimeoutError):
                break
            if n + len(item[0]) > self.max_batch:
                self.held = item  # arrival order kept: it opens the next batch
                break
            batch.append(item)
            n += len(item[0])
        return batch

    async def _run(self) -> None:
        from anyio import to_thread

        while True:
            batch = await self._gather()
            texts = [t for item, _ in batch for t in item]
            try:
                results = await to_thread.run_sync(self.score_batch, texts, limiter=self.limiter)
            except Exception as e:  # noqa: BLE001 - handed to each waiting request, which reports it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(batches=1, batch_texts=len(texts))
            start = 0
            for item, future in batch:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(results[start:start + len(item)])
                start += len(item)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 before any of it is parsed. A declared
    Content-Length over the limit is refused without reading the body; a chunked body is counted as it arrives
    and refused at the first byte over."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send, int(length))
        if length is not None:
            return await self.app(scope, receive, send)
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(send, size)
            body.append(chunk)
            more = message.get("more_body", False)
        whole = b"".join(body)

        async def replay() -> dict:
            nonlocal whole
            chunk, whole = whole, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Callable, size: int) -> None:
        body = json.dumps({"error": f"request body: {size} bytes or more, over the server's limit of "
                                    f"{self.limit} (--max-body-mb)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def default_body_limit(max_texts: int, max_chars: int) -> int:
    """Room for the largest request the text limits allow, at 4 bytes per character (UTF-8's most) plus JSON's
    quotes and commas, and 64 KiB besides."""
    return max_texts * (max_chars * 4 + 8) + 65536



def exit_with_supervisor(supervisor_pid: int) -> None:
    """Ask the kernel for a SIGTERM when the supervisor dies (Linux's PR_SET_PDEATHSIG). uvicorn stops its
    workers when it is stopped, but a supervisor killed with SIGKILL (the OOM killer, `kill -9`) would leave
    them serving the port, each with its own log, and nothing to stop them. The SIGTERM is the usual graceful
    shutdown: each worker finishes its requests and writes its prediction log. Elsewhere a no-op."""
    import signal

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before the request above: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)



# ---------------------------------------------------------------------------------------------- worker counters
COUNTERS = ("pid", "requests", "texts", "batches", "batch_texts", "log_logged", "log_dropped", "log_files",
            "log_queued")


class Counters:
    """What a server has done, summed over its worker processes: each worker owns one slot of int64 counters in a
    file the supervisor creates and every worker maps (mmap, MAP_SHARED), so GET /health and /model answer for the
    whole server, not for whichever worker the connection reached. A worker claims a free slot with a lock held
    for its life; one that uvicorn starts in place of a dead one takes its slot and keeps counting from the dead
    one's totals. `folder` None: one process, the counters in memory."""

    def __init__(self, folder: str | None = None, slots: int = 1) -> None:
        import numpy as np

        self.locks: list[Any] = []
        if folder is None:
            self.map, self.table = None, np.zeros((1, len(COUNTERS)), dtype=np.int64)
            self.slot = 0
        else:
            self.map, self.table, self.slot = self._claim(folder, slots)
        self.table[self.slot, 0] = os.getpid()

    @staticmethod
    def create(folder: str, slots: int) -> None:
        """The supervisor's part: a zeroed file of `slots` slots."""
        with open(os.path.join(folder, "counters"), "wb") as f:
            f.write(b"\0" * 8 * len(COUNTERS) * slots)

    def _claim(self, folder: str, slots: int) -> tuple:
        import fcntl
        import mmap

        import numpy as np

        with open(os.path.join(folder, "counters"), "r+b") as f:
            shared = mmap.mmap(f.fileno(), 8 * len(COUNTERS) * slots)
        table = np.frombuffer(shared, dtype=np.int64).reshape(slots, len(COUNTERS))
        for slot in range(slots):
            lock = open(os.path.join(folder, f"slot-{slot}.lock"), "w")  # noqa: SIM115 - held for the process's life
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            self.locks.append(lock)
            return shared, table, slot
        raise RuntimeError(f"serve: all {slots} counter slots in {folder} are held by live workers")

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.table[self.slot, COUNTERS.index(name)] += n

    def set_log(self, status: dict) -> None:
        for key in ("logged", "dropped", "files", "queued"):
            self.table[self.slot, COUNTERS.index(f"log_{key}")] = status[key]

    def total(self) -> dict:
        sums = self.table.sum(axis=0)
        return {"workers_counted": int((self.table[:, 0] > 0).sum()),
                **{name: int(sums[i]) for i, name in enumerate(COUNTERS) if name != "pid"}}


# ---------------------------------------------------------------------------------------------- workers auto
def memory_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def worker_memory(model: str, max_batch: int) -> int:
    """Bytes one worker process holds, measured: a fresh process loads the model and scores a full batch, and its
    resident memory is what each worker costs (a worker imports the same libraries). In a child process, so the
    supervisor does not keep a copy of the model it never uses; a bad model folder fails here, once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(loaded_memory, model, max_batch).result()


def loaded_memory(model: str, max_batch: int) -> int:
    """This process's resident bytes after loading `model` and scoring `max_batch` texts (worker_memory's probe)."""
    import psutil

    from pipeline.core.scoring import open_model

    scorer = open_model(model, threads=1)
    scorer.score(["a text of a few words to warm the model up"] * max(1, max_batch))
    return int(psutil.Process().memory_info().rss)


def choose_workers(cores: int, per_worker: int, available: int | None) -> tuple[int, int, str]:
    """(workers, threads per worker, why): one process per core, as many as half the available memory holds.

    On 2 cores two one-thread workers gave 2,165 req/s and p99 13 ms at 16 connections against one two-thread
    worker's 1,434 req/s and p99 112 ms (issue 35, wrk): a process per core scores two batches at once, where
    one process's intra-op threads share one small batch badly. One connection at a time is slower (its text gets
    one core, not two), which is why the choice is logged and `--workers 1` is there for it."""
    cores = max(1, cores)
    fit = cores if available is None else max(1, int(0.5 * available // max(1, per_worker)))
    workers = max(1, min(cores, fit))
    why = (f"{cores} cores, {per_worker / 2**20:.0f} MiB per worker measured, "
           + (f"{available / 2**20:.0f} MiB available (half of it for workers)" if available else
              "memory unknown") + f" -> {workers} worker(s) of {max(1, cores // workers)} thread(s)")
    return workers, max(1, cores // workers), why
