"""serve: an HTTP server for one packaged model (FastAPI + uvicorn; OpenAPI docs at /docs).

    finetune serve [--model models/student-onnx] [--host 127.0.0.1] [--port 8000] [--max-texts 256]
                   [--max-chars 10000] [--pool 16]

POST /predict {"texts": ["…", …]} -> per text: label, confidence, probabilities (or a status saying why a text
could not be scored, e.g. empty after normalisation); GET /health; GET /model (the model card's metadata: base
model, data md5s, params, test metrics). A bad request gets a 4xx with a one-line `error`, never a traceback.
Inference runs in a thread pool (onnxruntime and torch release the GIL), so concurrent clients do not wait for
one another's requests one at a time.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at runtime.

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

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


def create_app(model: str, max_texts: int = 256, max_chars: int = 10000, threads: int = 0, pool: int = 16) -> Any:
    import contextlib

    from fastapi import FastAPI

    from pipeline.core.scoring import Scorer

    scorer = Scorer(model, threads=threads)
    card = _card_metrics(Path(model))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        from anyio import to_thread

        to_thread.current_default_thread_limiter().total_tokens = pool  # requests scored at once
        yield

    app = FastAPI(title="finetune-pipeline model server", version="1", lifespan=lifespan,
                  description=f"Serves `{model}` ({scorer.kind}); labels: {', '.join(scorer.label_names)}. "
                              f"Limits: {max_texts} texts per request, {max_chars} characters per text.")
    install_error_handlers(app)

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    def predict(req: PredictRequest) -> Any:
        # A plain `def`: FastAPI runs it in its thread pool, so requests are scored concurrently.
        problem = request_problem(req.texts, max_texts, max_chars)
        if problem is not None:
            return problem
        return {"model_md5": scorer.hash, "predictions": scorer.score(req.texts)}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": str(model), "kind": scorer.kind}

    @app.get("/model")
    def model_info() -> dict:
        return {**scorer.info(), "test_metrics": card, "limits": {"max_texts": max_texts, "max_chars": max_chars}}

    return app


def _card_metrics(folder: Path) -> dict:
    """The test metrics evaluate wrote for this model (metrics/eval.json), if the folder is a packaged model."""
    lin = json.loads((folder / "lineage.json").read_text())
    name = "student_onnx" if (folder / "model.onnx").is_file() else lin.get("model")
    path = Path("metrics/eval.json")
    if name and path.is_file():
        m = json.loads(path.read_text()).get(name, {})
        return {k: m[k] for k in ("macro_f1", "accuracy", "macro_f1_ci", "accuracy_ci") if k in m}
    return {}


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    import uvicorn

    from pipeline.core.io import run_stage, setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/student-onnx")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-texts", type=int, default=256, help="texts per request")
    ap.add_argument("--max-chars", type=int, default=10000, help="characters per text")
    ap.add_argument("--threads", type=int, default=0, help="inference threads per request (0: the library's)")
    ap.add_argument("--pool", type=int, default=16, help="requests scored at once (FastAPI's thread pool)")
    args = ap.parse_args(argv)

    def _run() -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        app = create_app(args.model, args.max_texts, args.max_chars, args.threads, args.pool)
        log.info("serving %s on http://%s:%d (docs: /docs)", args.model, args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")

    run_stage(_run)


if __name__ == "__main__":
    main()
