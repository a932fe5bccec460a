"""predict: score a file with any packaged model, streaming, rows in input order.

    finetune predict --model models/student-onnx --input new.csv --output scored.parquet [--text-column text]
                     [--engine ray [--address auto] [--workers N]] [--log-dir logs/ [--no-log-text]]

CSV/TSV/JSONL/Parquet in and out (by extension; `.gz` input too). Each output row is the input row with `status`
(`ok`, or why it could not be scored: `empty_text`, `non_string_text`), `prediction`, `confidence` and `p_<label>`
per class; a bad row never aborts the file. The file is read and written in chunks (`--chunk-rows`), so memory
stays flat however long the file is. Texts are normalised with `clean`'s own function and the clean params the
model was trained with. What scored the file (model md5, its lineage, the git revision) is written to
`<output>.meta.json`, and into a Parquet output's schema metadata.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.core.io import run_stage, setup_logging
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import packaged_model
from pipeline.core.scoring import PackagedModel, git_rev, open_model
from pipeline.core.streaming import stream_file

log = logging.getLogger(__name__)


def score_file(scorer: PackagedModel, src: Path, dest: Path, text_column: str, fmt: str = "auto", out_fmt: str = "auto",
               encoding: str = "utf-8", chunk_rows: int = 10000, batch_size: int = 32, plog: Any = None) -> dict:
    """Score `src` into `dest` chunk by chunk. `plog`: a PredictionLog that also gets every scored row (request id
    `predict-<run>-<chunk>`), as `serve --log-dir` logs its traffic, for `finetune monitor`."""
    import uuid

    run_id = uuid.uuid4().hex[:12]

    def answer(texts: list[Any], first: int) -> tuple[list[str], dict[str, Any]]:
        scored = scorer.score(texts, batch_size)
        if plog is not None:
            plog.log_request(f"predict-{run_id}-{first // chunk_rows}", texts, scored)
        return [s["status"] for s in scored], scorer.output_columns(scored)  # the model's answer, as columns

    meta = {"model": scorer.info(), "input": str(src), "text_column": text_column, "git_rev": git_rev(Path.cwd())}
    return stream_file(src, dest, text_column, answer, meta, fmt, out_fmt, encoding, chunk_rows, "predict")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a packaged model folder (default: the ONNX student evaluate packages, from "
                                    "dvc.yaml)")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True, help="CSV/TSV/JSONL/Parquet, by extension")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--format", default="auto", help="input format when the extension does not say")
    ap.add_argument("--encoding", default="utf-8")
    ap.add_argument("--chunk-rows", type=int, default=None,
                    help="rows read, scored and written at a time (default 10,000; with --engine ray 200,000: each "
                         "chunk is one Ray job, which starts its actors and loads the model)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="ray: score on a Ray Data actor pool, the same batches (identical output)")
    ap.add_argument("--address", default=None, help="ray: a running cluster (auto, ray://host:10001); default: an "
                                                    "embedded one on this machine")
    ap.add_argument("--workers", type=int, default=0, help="ray: actors; 0 = one per CPU of the cluster")
    ap.add_argument("--log-dir", help="also log every scored text as serve --log-dir does (for finetune monitor)")
    ap.add_argument("--no-log-text", action="store_true", help="with --log-dir: log a SHA-256, not the text")
    args = ap.parse_args(argv)

    def _run() -> None:
        args.model = args.model or str(packaged_model(ONNX_NAME))
        engine = None
        if args.engine == "ray":
            from pipeline.core.engine import RayEngine

            engine = RayEngine(args.address, args.workers)
        scorer = open_model(args.model, threads=args.threads, engine=engine)
        plog = None
        if args.log_dir:
            from pipeline.core.predlog import PredictionLog

            # A queue as long as the job: nothing is dropped (writing Parquet is far faster than scoring).
            plog = PredictionLog(args.log_dir, scorer.log_fields, scorer.log_schema(), scorer.hash,
                                 log_text=not args.no_log_text, queue_rows=10**9)
        try:
            chunk_rows = args.chunk_rows or (200_000 if engine is not None else 10_000)
            meta = score_file(scorer, Path(args.input), Path(args.output), args.text_column, args.format, "auto",
                              args.encoding, chunk_rows, args.batch_size, plog)
        finally:
            if engine is not None:
                engine.close()
            if plog is not None:
                plog.close()
        log.info("scored %d rows of %s with %s (%s): %s -> %s", meta["rows"], args.input, args.model,
                 scorer.kind, meta["status"], args.output)

    run_stage(_run)


if __name__ == "__main__":
    main()
