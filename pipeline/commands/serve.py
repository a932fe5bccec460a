"""serve: an HTTP server for one packaged model (FastAPI + uvicorn; OpenAPI docs at /docs).

    finetune serve [--model models/student-onnx] [--host 127.0.0.1] [--port 8000] [--workers auto] [--max-texts 256]
                   [--max-chars 10000] [--max-body-mb N] [--max-batch 64] [--batch-wait-ms 0] [--pool 16]
                   [--max-explain-texts 16] [--max-explain-words 256]

By default (`--workers auto`) one server process per core, as many as half the available memory holds at the
measured size of one (the model loaded and a full batch scored in the parent first): on 2 cores, two one-thread
workers, p99 ~13 ms at 16 connections where one process gave 112 ms (bench/results/SERVE.md). /health says what
was chosen and why; its counts, and /model's, are the whole server's, summed over the workers.

POST /predict {"texts": ["…", …]} -> per text: label, confidence, probabilities (or a status saying why a text
could not be scored, e.g. empty after normalisation); POST /explain {"texts": [...], "method": "auto", "class":
null} -> per text, each word's attribution score for the class (`finetune explain` over HTTP; a token model: one
explanation per entity it finds, each with its span); GET / -> a page
to try it in a browser (paste a text: the label, the scores, the words highlighted); GET /health;
GET /model (the model card's metadata: base model, data md5s, params, test metrics, the limits). A bad request
gets a 4xx with a one-line `error`, never a traceback; a body over --max-body-mb gets its 413 before it is read.
With --log-dir every scored text is logged (pipeline/core/predlog.py: Parquet files written off the request path;
/health counts what was logged or dropped).

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
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipeline.core.io import read_lineage
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import ProjectError, packaged_model, workspace
from pipeline.core.serving import (
    ERRORS,
    Batcher,
    BodyLimit,
    Counters,
    choose_workers,
    default_body_limit,
    exit_with_supervisor,
    install_error_handlers,
    memory_available,
    request_problem,
    worker_memory,
)

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


class ExplainRequest(BaseModel):
    texts: list[str] = Field(..., description="texts to explain: at least one, at most the server's "
                                              "--max-explain-texts, each at most --max-explain-words words",
                             examples=[["Free entry in a weekly competition! Text WIN to 80086"]])
    method: str = Field("auto", description="auto (the method measured most faithful for this model), or one of "
                                            "GET /model's `explain.methods`")
    target: str | None = Field(None, alias="class", description="the class to explain; default: each text's "
                                                                "predicted class (a token model: explain only "
                                                                "the entities of this type)")


class WordScore(BaseModel):
    word: str
    start: int = Field(..., description="character offset in `text`")
    end: int
    score: float = Field(..., description="evidence for the class (positive) or against it (negative)")


class ExplainedEntity(BaseModel):
    start: int = Field(..., description="character offset of the entity in `text`")
    end: int
    type: str
    text: str


class Explanation(BaseModel):
    text_index: int = Field(..., description="which of the request's texts this explains")
    text: str = Field(..., description="the text as the model reads it (a text classifier's: normalised, a long "
                                       "text cut as it cuts it; a token model's: as sent)")
    label: str = Field(..., description="the predicted class (a token model: the entity's type)")
    target: str = Field(..., description="the class explained (a token model: the entity's type)")
    probability: float = Field(..., description="the model's probability of `target` (an entity: the mean of its "
                                                "words' tag probabilities)")
    method: str
    words: list[WordScore]
    entity: ExplainedEntity | None = Field(None, description="a token model: the entity explained (one "
                                                             "explanation per entity found; none for a text "
                                                             "without entities)")


class ExplainResponse(BaseModel):
    model_md5: str
    explanations: list[Explanation]



def create_app(model: str, max_texts: int = 256, max_chars: int = 10000, threads: int = 0, pool: int = 16,
               max_batch: int = 64, batch_wait_ms: float = 0.0, max_body: int | None = None,
               prediction_log: dict | None = None, workers: dict | None = None, max_explain_texts: int = 16,
               max_explain_words: int = 256) -> Any:
    """The app. `prediction_log`: PredictionLog's options (folder, log_text, rotate_rows, rotate_seconds) to log
    every scored text, or None. `workers`: how the server was started (count, threads, why, and the shared counters'
    folder when there are several processes), reported by /health."""
    import contextlib

    from fastapi import FastAPI

    from pipeline.core.predlog import PredictionLog
    from pipeline.core.scoring import open_model

    scorer = open_model(model, threads=threads)
    plog = PredictionLog(fields=scorer.log_fields, schema=scorer.log_schema(), model_md5=scorer.hash,
                         **prediction_log) \
        if prediction_log else None
    workers = dict(workers or {"count": 1, "threads": threads, "chosen": "given"})
    counters = Counters(workers.pop("counters", None), workers["count"])
    max_body = default_body_limit(max_texts, max_chars) if max_body is None else max_body
    batcher = Batcher(scorer.score, max_batch, batch_wait_ms / 1000, on_batch=counters.add) if max_batch > 0 \
        else None
    limits = {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": max_body, "max_batch": max_batch,
              "batch_wait_ms": batch_wait_ms, "max_explain_texts": max_explain_texts,
              "max_explain_words": max_explain_words}

    async def copy_log_status() -> None:
        while True:  # the log's writer thread moves its counts on its own: copy them where the others can sum them
            counters.set_log(plog.status())
            await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        from anyio import to_thread

        to_thread.current_default_thread_limiter().total_tokens = pool  # requests scored at once, unbatched
        if batcher is not None:
            batcher.start()
        copier = asyncio.get_running_loop().create_task(copy_log_status()) if plog is not None else None
        yield
        if batcher is not None:
            await batcher.stop()
        if copier is not None:
            copier.cancel()
        if plog is not None:  # uvicorn runs this on SIGTERM/SIGINT: every queued row is written
            plog.close()
            counters.set_log(plog.status())

    app = FastAPI(title="finetune-pipeline model server", version="1", lifespan=lifespan,
                  description=f"Serves `{model}` ({scorer.kind}); labels: {', '.join(scorer.label_names)}. "
                              f"Limits: {max_texts} texts per request, {max_chars} characters per text, "
                              f"{max_body} bytes per body.")
    app.add_middleware(BodyLimit, limit=max_body)
    install_error_handlers(app)
    add_routes(app, scorer, batcher, {"log": plog, "counters": counters, "workers": workers}, limits,
               _card_metrics(Path(model)))
    return app


def add_routes(app: Any, scorer: Any, batcher: Batcher | None, state: dict, limits: dict, card: dict) -> None:
    """POST /predict (batched when `batcher`, else in FastAPI's thread pool), GET /health, GET /model. The answer's
    schema is the model's own where it has one (a token model answers entity spans), else a label per text.
    `state`: the prediction log (or None), the counters shared by every worker, and how the workers were chosen."""
    import uuid

    response = getattr(scorer, "response_model", PredictResponse)
    plog, counters = state["log"], state["counters"]
    max_texts, max_chars = limits["max_texts"], limits["max_chars"]

    def answer(texts: list, results: list[dict]) -> dict:
        request_id = uuid.uuid4().hex
        if plog is not None:
            plog.log_request(request_id, texts, results)  # queued, never blocks
        counters.add(requests=1, texts=len(texts))
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

    add_explain(app, scorer, limits)
    add_page(app, scorer)

    @app.get("/health")
    def health() -> dict:
        """Counts are the whole server's, summed over its worker processes."""
        total = counters.total()
        log_status = None if plog is None else {"folder": str(plog.folder), **{
            k: total[f"log_{k}"] for k in ("logged", "dropped", "files", "queued")}}
        return {"status": "ok", "model": str(scorer.folder), "kind": scorer.kind, "workers": state["workers"],
                "served": {k: total[k] for k in ("requests", "texts", "batches", "workers_counted")},
                "prediction_log": log_status}

    @app.get("/model")
    def model_info() -> dict:
        total = counters.total()
        served = {"batches": total["batches"], "texts": total["batch_texts"]} if batcher is not None else None
        return {**scorer.info(), "test_metrics": card, "limits": limits, "batching": served}


def add_page(app: Any, scorer: Any) -> None:
    """GET /: a page to try the model on (pipeline/core/page.py), built once."""
    from fastapi.responses import HTMLResponse

    from pipeline.core.page import page

    front = page(str(scorer.folder), scorer.kind, scorer.label_names)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> str:
        return front


def add_explain(app: Any, scorer: Any, limits: dict) -> None:
    """POST /explain: word attributions (pipeline/core/attribution.py). A plain `def`, so FastAPI runs it in its
    thread pool: /predict's batcher and event loop never wait for it, and costs nothing while nobody asks. Bounded:
    texts per request and words per text (occlusion scores each word), under the same body limit."""
    from pipeline.core.attribution import available, explain_each, read_words
    from pipeline.core.explanation import AttributionError
    from pipeline.core.serving import error

    methods = available(scorer)
    limits["explain"] = {"methods": list(methods), "max_texts": limits["max_explain_texts"],
                         "max_words": limits["max_explain_words"]} if methods else None

    @app.post("/explain", response_model=ExplainResponse, responses=ERRORS)
    def explain_route(req: ExplainRequest) -> Any:
        problem = request_problem(req.texts, limits["max_explain_texts"], limits["max_chars"])
        if problem is not None:
            return problem
        counts, status = read_words(scorer, req.texts)
        bad = [i for i, st in enumerate(status) if st != "ok"]
        if bad:
            return error(422, f"texts[{bad[0]}]: {status[bad[0]]}: nothing to explain")
        long = [i for i, n in enumerate(counts) if n > limits["max_explain_words"]]
        if long:
            return error(413, f"texts[{long[0]}]: {counts[long[0]]} words, more than /explain's "
                              f"limit of {limits['max_explain_words']} (--max-explain-words)")
        try:
            found = explain_each(scorer, req.texts, req.method, req.target)
        except AttributionError as e:
            return error(422, str(e))
        return {"model_md5": scorer.hash,
                "explanations": [{**e.as_dict(), "text_index": i} for i, row in enumerate(found) for e in row]}


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



def plan_workers(model: str, workers: str, threads: int, max_batch: int) -> dict:
    """How many processes and threads: `auto` measures one worker's memory (loading the model, so a bad folder is
    one error here, not one per worker) and takes one process per core as far as memory allows; a number is taken
    as given (the model still loaded once here when there are several)."""
    cores = os.cpu_count() or 1
    if workers == "auto":
        per_worker = worker_memory(model, max_batch)
        count, auto_threads, why = choose_workers(cores, per_worker, memory_available())
        log.info("--workers auto: %s", why)
        return {"count": count, "threads": threads or auto_threads, "chosen": f"auto: {why}",
                "worker_memory_mib": round(per_worker / 2**20)}
    count = int(workers)
    if count > 1:
        worker_memory(model, 1)
    # One process per share of the cores, not every process on every core (0 with one process: the library's own).
    return {"count": count, "threads": threads or (max(1, cores // count) if count > 1 else 0), "chosen": "given"}


def workers_arg(value: str) -> str:
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: auto or a whole number of at least 1")


def parser(prog: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a packaged model folder (default: the ONNX student evaluate packages, "
                                    "from dvc.yaml)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-texts", type=int, default=256, help="texts per request")
    ap.add_argument("--max-chars", type=int, default=10000, help="characters per text")
    ap.add_argument("--max-explain-texts", type=int, default=16, help="texts per POST /explain request")
    ap.add_argument("--max-explain-words", type=int, default=256,
                    help="words per text in POST /explain (occlusion scores the text once per word)")
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
    ap.add_argument("--workers", type=workers_arg, default="auto",
                    help="server processes, each with the model, its own batcher and (unless --threads) cores / "
                         "workers inference threads; the OS spreads connections over them. auto (the default): one "
                         "per core, as many as half the available memory holds at the measured size of one "
                         "(GET /health says what was chosen and why)")
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
    for name in ("max_texts", "max_chars", "pool", "max_explain_texts", "max_explain_words"):
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
                  "batch_wait_ms": args.batch_wait_ms, "max_body": max_body, "prediction_log": plog,
                  "max_explain_texts": args.max_explain_texts, "max_explain_words": args.max_explain_words}
        common = {"host": args.host, "port": args.port, "log_level": "warning", "http": args.http, "loop": args.loop}
        workers = plan_workers(args.model, args.workers, args.threads, args.max_batch)
        config["threads"] = workers["threads"]
        if workers["count"] == 1:
            app = create_app(**config, workers=workers)
            log.info("serving %s on http://%s:%d (docs: /docs)", args.model, args.host, args.port)
            return uvicorn.run(app, **common)
        with tempfile.TemporaryDirectory(prefix="finetune-serve-") as shared:
            Counters.create(shared, workers["count"])
            os.environ[CONFIG_ENV] = json.dumps({**config, "workers": {**workers, "counters": shared},
                                                 "supervisor_pid": os.getpid()})
            log.info("serving %s on http://%s:%d with %d worker processes of %d thread(s) (docs: /docs)", args.model,
                     args.host, args.port, workers["count"], workers["threads"])
            uvicorn.run("pipeline.commands.serve:app_from_env", factory=True, workers=workers["count"], **common)

    run_stage(_run)


if __name__ == "__main__":
    main()
