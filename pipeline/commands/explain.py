"""explain: which words made a packaged model decide, for texts on the command line or a whole file.

    finetune explain --text "WINNER!! Claim your prize" [--text ...] [--model models/student-onnx]
                     [--method auto|occlusion|integrated_gradients|gradient_x_input|attention|coefficients|random]
                     [--class spam] [--top 5] [--json]
    finetune explain --input new.csv --output explained.parquet [--text-column text] [--chunk-rows 1000]

Each word of the text as the model reads it gets a score for the class (the predicted one unless `--class` names
another): positive is evidence for it, negative against. `auto` is the method measured most faithful for what the
model can run (bench/results/FAITHFULNESS.md): integrated gradients for a torch model, the coefficients for the
TF-IDF baseline, occlusion for the int8 ONNX student (no gradients). File mode streams as predict does (rows in
input order, a bad row gets a `status` and never aborts the file) and adds `prediction`, `target`, `probability`,
`method`, `top_words` (the strongest words for the class, `word (+score)`) and `attributions` (JSON: every word
with its character span and score).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.core.attribution import METHODS, Explanation, explain
from pipeline.core.io import DataError, run_stage, setup_logging
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import packaged_model
from pipeline.core.scoring import git_rev, open_model
from pipeline.core.streaming import stream_file

log = logging.getLogger(__name__)


def top_text(e: Explanation, k: int) -> str:
    return "; ".join(f"{w} ({v:+.3f})" for w, v in e.top(k))


def explain_file(model: Any, src: Path, dest: Path, text_column: str, method: str, target: str | None, top: int,
                 fmt: str = "auto", encoding: str = "utf-8", chunk_rows: int = 1000, batch_size: int = 32) -> dict:
    def answer(texts: list[Any], first: int) -> tuple[list[str], dict[str, Any]]:
        _, status = model.normalise(texts)
        ok = [i for i, s in enumerate(status) if s == "ok"]
        found = dict(zip(ok, explain(model, [texts[i] for i in ok], method, target, batch_size=batch_size)))
        cols: dict[str, list] = {c: [] for c in ("prediction", "target", "probability", "method", "top_words",
                                                 "attributions")}
        for i in range(len(texts)):
            e = found.get(i)
            cols["prediction"].append(e and e.label)
            cols["target"].append(e and e.target)
            cols["probability"].append(e and e.probability)
            cols["method"].append(e and e.method)
            cols["top_words"].append(e and top_text(e, top))
            cols["attributions"].append(e and json.dumps(e.as_dict()["words"], ensure_ascii=False))
        return status, cols

    meta = {"model": model.info(), "input": str(src), "text_column": text_column, "method": method,
            "target": target, "git_rev": git_rev(Path.cwd())}
    return stream_file(src, dest, text_column, answer, meta, fmt, "auto", encoding, chunk_rows, "explain")


def highlighted(e: Explanation, k: int) -> str:
    """The text with its `k` strongest words for the class in [brackets], for a terminal."""
    keep = {i for i in e.ranking()[:k] if e.scores[i] > 0}  # by position: a repeated word is marked where it counts
    return " ".join(f"[{w}]" if i in keep else w for i, w in enumerate(e.words))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to explain (repeat for several)")
    src.add_argument("--input", help="a CSV/TSV/JSONL/Parquet file (with --output)")
    ap.add_argument("--output", help="file mode: CSV/TSV/JSONL/Parquet, by extension")
    ap.add_argument("--model", help="a packaged model folder (default: the ONNX student evaluate packages)")
    ap.add_argument("--method", default="auto", choices=["auto", *METHODS])
    ap.add_argument("--class", dest="target", help="explain this class (default: each text's predicted class)")
    ap.add_argument("--top", type=int, default=5, help="how many words to name (default 5)")
    ap.add_argument("--json", action="store_true", help="--text mode: every word's score, as JSON")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--format", default="auto", help="input format when the extension does not say")
    ap.add_argument("--encoding", default="utf-8")
    ap.add_argument("--chunk-rows", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.input and not args.output:
        ap.error("--input needs --output")

    def _run() -> None:
        model = open_model(args.model or str(packaged_model(ONNX_NAME)), threads=args.threads)
        if args.input:
            meta = explain_file(model, Path(args.input), Path(args.output), args.text_column, args.method,
                                args.target, args.top, args.format, args.encoding, args.chunk_rows, args.batch_size)
            log.info("explained %d rows of %s with %s: %s -> %s", meta["rows"], args.input, model.folder,
                     meta["status"], args.output)
            return
        _, status = model.normalise(args.text)
        bad = [(i, s) for i, s in enumerate(status) if s != "ok"]
        if bad:
            raise DataError(f"--text {bad[0][0] + 1}: {bad[0][1]} (nothing to explain)")
        found = explain(model, args.text, args.method, args.target, batch_size=args.batch_size)
        if args.json:
            sys.stdout.write(json.dumps([e.as_dict() for e in found], ensure_ascii=False, indent=2) + "\n")
            return
        for e in found:
            sys.stdout.write(f"{e.target} (p={e.probability:.3f}, predicted {e.label}; {e.method}): "
                             f"{top_text(e, args.top) or 'no word supports it'}\n  {highlighted(e, args.top)}\n")

    run_stage(_run)


if __name__ == "__main__":
    main()
