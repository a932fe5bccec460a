"""explain: which words made a packaged model decide, for texts on the command line or a whole file.

    finetune explain --text "WINNER!! Claim your prize" [--text ...] [--model models/student-onnx]
                     [--method auto|occlusion|integrated_gradients|gradient_x_input|attention|coefficients|random]
                     [--class spam] [--top 5] [--json]
    finetune explain --input new.csv --output explained.parquet [--text-column text] [--chunk-rows 1000]

Each word of the text as the model reads it gets a score for the class (the predicted one unless `--class` names
another): positive is evidence for it, negative against. `auto` is the method measured most faithful for what the
model can run (bench/results/FAITHFULNESS.md): the coefficients for the TF-IDF baseline, occlusion for every other
model (the torch teacher and student too: ahead of integrated gradients on two datasets of three). File mode
streams as predict does (rows in input order, a bad row gets a `status` and never aborts the file) and adds
`prediction`, `target`, `probability`, `method`, `top_words` (the strongest words for the class, `word (+score)`)
and `attributions` (JSON: every word with its character span and score).

A token model is explained per entity it tags (pipeline/core/token_attribution.py, occlusion): each word's score is
how much the entity's probability drops when the word is masked. Text mode prints each entity, its own words in
{braces}; file mode adds `n_entities`, `top_words` (`entity (type): word (+score); ...`, entities split by ` | `)
and `attributions` (JSON: per entity its span, type, probability and every word's score).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.core.attribution import METHODS, explain_each, per_entity, read_words
from pipeline.core.explanation import Explanation
from pipeline.core.io import DataError, run_stage, setup_logging
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import packaged_model
from pipeline.core.scoring import git_rev, open_model
from pipeline.core.streaming import stream_file

log = logging.getLogger(__name__)


def top_text(e: Explanation, k: int) -> str:
    return "; ".join(f"{w} ({v:+.3f})" for w, v in e.top(k))


def headline(e: Explanation) -> str:
    """What was explained: a text's class, or an entity (its type, its text, where it is)."""
    if e.entity is not None:
        span = e.entity
        return f"{e.target} {span['text']!r} [{span['start']}:{span['end']}] (p={e.probability:.3f}; {e.method})"
    return f"{e.target} (p={e.probability:.3f}, predicted {e.label}; {e.method})"


def class_columns(found: dict[int, list[Explanation]], n: int, top: int) -> dict[str, list]:
    """A text classifier's row: its prediction, the class explained, the strongest words, every word's score."""
    cols: dict[str, list] = {c: [] for c in ("prediction", "target", "probability", "method", "top_words",
                                             "attributions")}
    for i in range(n):
        e = found[i][0] if found.get(i) else None
        cols["prediction"].append(e and e.label)
        cols["target"].append(e and e.target)
        cols["probability"].append(e and e.probability)
        cols["method"].append(e and e.method)
        cols["top_words"].append(e and top_text(e, top))
        cols["attributions"].append(e and json.dumps(e.as_dict()["words"], ensure_ascii=False))
    return cols


def entity_columns(found: dict[int, list[Explanation]], n: int, top: int) -> dict[str, list]:
    """A token model's row: how many entities, and per entity its span, probability and strongest words."""
    cols: dict[str, list] = {c: [] for c in ("n_entities", "top_words", "attributions")}
    for i in range(n):
        row = found.get(i)
        cols["n_entities"].append(None if row is None else len(row))
        cols["top_words"].append(None if row is None else " | ".join(
            f"{e.entity['text']} ({e.target}): {top_text(e, top)}" for e in row))
        cols["attributions"].append(None if row is None else json.dumps(
            [{k: v for k, v in e.as_dict().items() if k != "text"} for e in row], ensure_ascii=False))
    return cols


def explain_file(model: Any, src: Path, dest: Path, text_column: str, method: str, target: str | None, top: int,
                 fmt: str = "auto", encoding: str = "utf-8", chunk_rows: int = 1000, batch_size: int = 32) -> dict:
    columns = entity_columns if per_entity(model) else class_columns

    def answer(texts: list[Any], first: int) -> tuple[list[str], dict[str, Any]]:
        _, status = read_words(model, texts)
        ok = [i for i, s in enumerate(status) if s == "ok"]
        found = dict(zip(ok, explain_each(model, [texts[i] for i in ok], method, target, batch_size=batch_size)))
        return status, columns(found, len(texts), top)

    meta = {"model": model.info(), "input": str(src), "text_column": text_column, "method": method,
            "target": target, "git_rev": git_rev(Path.cwd())}
    return stream_file(src, dest, text_column, answer, meta, fmt, "auto", encoding, chunk_rows, "explain")


def highlighted(e: Explanation, k: int) -> str:
    """The text's words with the `k` strongest for the class in [brackets] (an entity's own words in {braces}),
    for a terminal."""
    keep = {i for i in e.ranking()[:k] if e.scores[i] > 0}  # by position: a repeated word is marked where it counts
    own = range(*e.at) if e.at else range(0)
    return " ".join(("{%s}" if i in own else "%s") % (f"[{w}]" if i in keep else w) for i, w in enumerate(e.words))


def write_text_mode(texts: list[str], found: list[list[Explanation]], top: int, as_json: bool, grouped: bool
                    ) -> None:
    """`grouped` (a token model): per text, its entities' explanations; else one explanation per text."""
    if as_json:
        out: Any = [{"text": t, "explanations": [{k: v for k, v in e.as_dict().items() if k != "text"} for e in row]}
                    for t, row in zip(texts, found)] \
            if grouped else [row[0].as_dict() for row in found]
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
        return
    for n, row in enumerate(found, 1):
        if not row:
            sys.stdout.write(f"--text {n}: no entity found\n")
        for e in row:
            sys.stdout.write(f"{headline(e)}: {top_text(e, top) or 'no word supports it'}\n"
                             f"  {highlighted(e, top)}\n")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to explain (repeat for several)")
    src.add_argument("--input", help="a CSV/TSV/JSONL/Parquet file (with --output)")
    ap.add_argument("--output", help="file mode: CSV/TSV/JSONL/Parquet, by extension")
    ap.add_argument("--model", help="a packaged model folder (default: the ONNX student evaluate packages)")
    ap.add_argument("--method", default="auto", choices=["auto", *METHODS])
    ap.add_argument("--class", dest="target", help="explain this class (default: each text's predicted class); "
                    "a token model: explain the entities of this type only")
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
        _, status = read_words(model, args.text)
        bad = [(i, s) for i, s in enumerate(status) if s != "ok"]
        if bad:
            raise DataError(f"--text {bad[0][0] + 1}: {bad[0][1]} (nothing to explain)")
        found = explain_each(model, args.text, args.method, args.target, batch_size=args.batch_size)
        write_text_mode(args.text, found, args.top, args.json, per_entity(model))

    run_stage(_run)


if __name__ == "__main__":
    main()
