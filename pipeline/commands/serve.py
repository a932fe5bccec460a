"""serve: an HTTP server for one packaged model (FastAPI + uvicorn; OpenAPI docs at /docs).

    finetune serve [--model models/student-onnx] [--host 127.0.0.1] [--port 8000] [--max-texts 256]
                   [--max-chars 10000] [--max-body-mb N] [--max-batch 64] [--batch-wait-ms 0] [--pool 16]

POST /predict {"texts": ["…", …]} -> per text: label, confidence, probabilities (or a status saying why a text
could not be scored, e.g. empty after normalisation); GET /health; GET /model (the model card's metadata: base
model, data md5s, params, test metrics, the limits). A bad request gets a 4xx with a one-line `error`, never a
traceback; a body over --max-body-mb gets its 413 before it is read. With --log-dir every scored text is logged
(pipeline/core/predlog.py: Parquet files written off the request path; /health counts what was logged or dropped).

Dynamic batching (as Triton's dynamic batcher, TorchServe and LitServe do): requests that arrive while a batch is
being scored queue, and the next batch takes them together, up to --max-batch texts (a request is never split; a
bigger one is a batch of its own), after waiting --batch-wait-ms for more (0 by default: under load the queue fills
while the previous batch runs). One model call per batch, with every core, instead of 16 threads fighting over
them: about 1.6x the requests/s of the earlier server under 16 concurrent clients on 2 cores, and with
--workers 2 (a process, a batcher and one inference thread per core) a median 2.05x over eight runs, p99
23-31 ms (bench/results/SERVE.md). Each request gets its own texts' results and
statuses. `--max-batch 0` scores each request alone in a thread pool of --pool threads (the earlier server). The
int8 model quantises activations per batch, so batch mates move a text's probabilities a little (as the other texts
of one request always did): on the 516 SMS test rows, by 0.0002 on average and 0.02 at most, with every label the
same (bench/results/SERVE.md).
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at runtime.

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from pipeline.core.io import read_lineage
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import ProjectError, packaged_model, workspace

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    texts: list[str] = Field(..., description="texts to score: at least one, at most the server's --max-texts, each "
                                              "at most --max-chars characters (GET /model says the limits)",
                             examples=[["Free entry in a weekly competition! Text WIN to 80086"]])


class Prediction(BaseModel):
    status: str = Field(..., description="`ok`, or why the text could not be scored (e.g. `empty_text`)")
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None


class PredictResponse(BaseModel):
    model_md5: str
    request_id: str = Field(..., description="this request's id: its rows in the prediction log (--log-dir) carry it")
    predictions: list[Prediction]


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

    def __init__(self, score_batch: Callable[[list], list], max_batch: int, wait_s: float) -> None:
        self.score_batch, self.max_batch, self.wait_s = score_batch, max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held: tuple | None = None  # a request that did not fit the last batch: first in the next
        self.task: asyncio.Task | None = None
        self.limiter: Any = None
        self.batches = self.texts = 0  # counters for GET /model: how much batching happened

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
            self.batches, self.texts = self.batches + 1, self.texts + len(texts)
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


def create_app(model: str, max_texts: int = 256, max_chars: int = 10000, threads: int = 0, pool: int = 16,
               max_batch: int = 64, batch_wait_ms: float = 0.0, max_body: int | None = None,
               prediction_log: dict | None = None) -> Any:
    """The app. `prediction_log`: PredictionLog's options (folder, log_text, rotate_rows, rotate_seconds) to log
    every scored text, or None."""
    import contextlib

    from fastapi import FastAPI

    from pipeline.core.predlog import PredictionLog
    from pipeline.core.scoring import open_model

    scorer = open_model(model, threads=threads)
    if prediction_log and not scorer.logs_predictions:
        raise ProjectError(f"--log-dir: {model} is a token model; the prediction log holds a label per text, and "
                           "entity spans are not logged yet (issue 33)")
    plog = PredictionLog(label_names=scorer.label_names, model_md5=scorer.hash, **prediction_log) \
        if prediction_log else None
    max_body = default_body_limit(max_texts, max_chars) if max_body is None else max_body
    batcher = Batcher(scorer.score, max_batch, batch_wait_ms / 1000) if max_batch > 0 else None
    limits = {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": max_body, "max_batch": max_batch,
              "batch_wait_ms": batch_wait_ms}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        from anyio import to_thread

        to_thread.current_default_thread_limiter().total_tokens = pool  # requests scored at once, unbatched
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()
        if plog is not None:  # uvicorn runs this on SIGTERM/SIGINT: every queued row is written
            plog.close()

    app = FastAPI(title="finetune-pipeline model server", version="1", lifespan=lifespan,
                  description=f"Serves `{model}` ({scorer.kind}); labels: {', '.join(scorer.label_names)}. "
                              f"Limits: {max_texts} texts per request, {max_chars} characters per text, "
                              f"{max_body} bytes per body.")
    app.add_middleware(BodyLimit, limit=max_body)
    install_error_handlers(app)
    add_routes(app, scorer, batcher, plog, limits, _card_metrics(Path(model)))
    return app


def add_routes(app: Any, scorer: Any, batcher: Batcher | None, plog: Any, limits: dict, card: dict) -> None:
    """POST /predict (batched when `batcher`, else in FastAPI's thread pool), GET /health, GET /model. The answer's
    schema is the model's own where it has one (a token model answers entity spans), else a label per text."""
    import uuid

    response = getattr(scorer, "response_model", PredictResponse)

    max_texts, max_chars = limits["max_texts"], limits["max_chars"]

    def answer(texts: list, results: list[dict]) -> dict:
        request_id = uuid.uuid4().hex
        if plog is not None:
            plog.log_request(request_id, texts, results)  # queued, never blocks
        return {"model_md5": scorer.hash, "request_id": request_id, "predictions": results}

    if batcher is not None:
        @app.post("/predict", response_model=response, responses=ERRORS)
        async def predict(req: PredictRequest) -> Any:
            problem = request_problem(req.texts, max_texts, max_chars)
            if problem is not None:
                return problem
            return answer(req.texts, await batcher.submit(req.texts))
    else:
        @app.post("/predict", response_model=response, responses=ERRORS)
        def predict(req: PredictRequest) -> Any:
            # A plain `def`: FastAPI runs it in its thread pool, so requests are scored concurrently.
            problem = request_problem(req.texts, max_texts, max_chars)
            if problem is not None:
                return problem
            return answer(req.texts, scorer.score(req.texts))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": str(scorer.folder), "kind": scorer.kind,
                "prediction_log": plog.status() if plog is not None else None}

    @app.get("/model")
    def model_info() -> dict:
        served = {"batches": batcher.batches, "texts": batcher.texts} if batcher is not None else None
        return {**scorer.info(), "test_metrics": card, "limits": limits, "batching": served}


def _card_metrics(folder: Path) -> dict:
    """The test metrics evaluate wrote for this model (metrics/eval.json), if the folder is a packaged model."""
    name = read_lineage(folder).get("model")  # the name evaluate scored and packaged it under
    try:
        path = workspace().path("evaluate", "metrics")  # eval.json, wherever dvc.yaml has evaluate write it
    except (FileNotFoundError, ProjectError):
        return {}
    if name and Path(path).is_file():
        m = json.loads(Path(path).read_text()).get(name, {})
        return {k: m[k] for k in ("macro_f1", "accuracy", "macro_f1_ci", "accuracy_ci", "f1", "entity_f1_ci") if k in m}
    return {}


CONFIG_ENV = "FINETUNE_SERVE_CONFIG"  # create_app's arguments, for the worker processes uvicorn starts


def app_from_env() -> Any:
    """The app in a worker process of `serve --workers N` (uvicorn imports this factory in each)."""
    config = json.loads(os.environ[CONFIG_ENV])
    exit_with_supervisor(config.pop("supervisor_pid"))
    return create_app(**config)


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


def check_model(model: str) -> None:
    """Load the model once in the parent: a bad folder is one error, not one per worker."""
    from pipeline.core.scoring import open_model

    open_model(model, threads=1)


def parser(prog: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a packaged model folder (default: the ONNX student evaluate packages, "
                                    "from dvc.yaml)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-texts", type=int, default=256, help="texts per request")
    ap.add_argument("--max-chars", type=int, default=10000, help="characters per text")
    ap.add_argument("--threads", type=int, default=0, help="inference threads per request (0: the library's)")
    ap.add_argument("--max-body-mb", type=float, default=None,
                    help="request body limit, refused with 413 before it is read (default: what the text limits "
                         "need at 4 bytes per character)")
    ap.add_argument("--max-batch", type=int, default=64,
                    help="texts scored together at most (dynamic batching); 0: each request alone, in --pool threads")
    ap.add_argument("--batch-wait-ms", type=float, default=0.0,
                    help="how long a batch waits after its first request for more to join it")
    ap.add_argument("--pool", type=int, default=16, help="requests scored at once when --max-batch is 0")
    ap.add_argument("--log-dir", default=None, help="log every scored text here (append-only Parquet files)")
    ap.add_argument("--no-log-text", action="store_true", help="log each text's SHA-256 and length, not the text")
    ap.add_argument("--log-rotate-rows", type=int, default=10_000, help="rows per log file at most")
    ap.add_argument("--log-rotate-seconds", type=float, default=10.0,
                    help="a log file is written at the latest this long after its first row (what a kill can lose)")
    ap.add_argument("--workers", type=int, default=1,
                    help="server processes, each with the model, its own batcher and (unless --threads) cores / "
                         "workers inference threads; the OS spreads connections over them")
    ap.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto",
                    help="uvicorn's HTTP parser (auto: httptools, the C one, when installed)")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                    help="uvicorn's event loop (auto: uvloop when installed)")
    return ap


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    import uvicorn

    from pipeline.core.io import run_stage, setup_logging

    setup_logging()
    ap = parser(prog)
    args = ap.parse_args(argv)
    for name in ("max_texts", "max_chars", "pool", "workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_batch < 0 or args.batch_wait_ms < 0 or (args.max_body_mb is not None and args.max_body_mb <= 0):
        ap.error("--max-batch and --batch-wait-ms must be >= 0, --max-body-mb > 0")
    max_body = None if args.max_body_mb is None else int(args.max_body_mb * 2**20)

    def _run() -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        args.model = args.model or str(packaged_model(ONNX_NAME))
        plog = None if not args.log_dir else {"folder": args.log_dir, "log_text": not args.no_log_text,
                                               "rotate_rows": args.log_rotate_rows,
                                               "rotate_seconds": args.log_rotate_seconds}
        config = {"model": args.model, "max_texts": args.max_texts, "max_chars": args.max_chars,
                  "threads": args.threads, "pool": args.pool, "max_batch": args.max_batch,
                  "batch_wait_ms": args.batch_wait_ms, "max_body": max_body, "prediction_log": plog}
        common = {"host": args.host, "port": args.port, "log_level": "warning", "http": args.http, "loop": args.loop}
        if args.workers == 1:
            app = create_app(**config)
            log.info("serving %s on http://%s:%d (docs: /docs)", args.model, args.host, args.port)
            return uvicorn.run(app, **common)
        if not args.threads:  # one process per share of the cores, not every process on every core
            config["threads"] = max(1, (os.cpu_count() or 1) // args.workers)
        check_model(args.model)  # a bad model folder fails here, once, not in every worker
        os.environ[CONFIG_ENV] = json.dumps({**config, "supervisor_pid": os.getpid()})
        log.info("serving %s on http://%s:%d with %d worker processes (docs: /docs)", args.model, args.host,
                 args.port, args.workers)
        uvicorn.run("pipeline.commands.serve:app_from_env", factory=True, workers=args.workers, **common)

    run_stage(_run)


if __name__ == "__main__":
    main()
