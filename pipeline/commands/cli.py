"""finetune: one front door for the user commands.

check, explain, fetch, ingest, kfold, lineage, monitor, predict, serve, tune:

    finetune check                      # every data/params problem at once, and what the auto defaults decide
    finetune lineage trace --raw-row 5 --json
    finetune --help | finetune <command> --help

The pipeline's stages are not here: `dvc repro` runs them (dvc.yaml). Global options (`--log-level`, `-q`) are
accepted before or after the command.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module whose main(argv, prog) runs it, one line for --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("pipeline.commands.check", "every problem of params.yaml and the raw file at once, and what auto "
                                         "decides"),
    "explain": ("pipeline.commands.explain", "which words made a model decide, for texts or a whole file "
                                             "(attributions)"),
    "fetch": ("pipeline.commands.fetch", "a Hugging Face Hub dataset, at a pinned revision, into a raw file"),
    "ingest": ("pipeline.commands.ingest", "labelled rows (monitor's to_label.csv) into the feedback file clean "
                                           "reads, with their request ids"),
    "kfold": ("pipeline.commands.kfold", "settle a small set's comparisons on k disjoint test folds, run as DVC "
                                         "experiments"),
    "lineage": ("pipeline.commands.lineage", "trace a row, check a model, diff two revisions row by row"),
    "monitor": ("pipeline.commands.monitor", "drift of logged traffic (or any file) against the test rows; exit 3 "
                                             "on drift"),
    "predict": ("pipeline.commands.predict", "score a file with a packaged model, streaming in chunks"),
    "serve": ("pipeline.commands.serve", "serve a packaged model over HTTP (FastAPI, OpenAPI at /docs)"),
    "tune": ("pipeline.commands.tune", "choose the teacher's learning rate and epochs as DVC experiments"),
}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def split_globals(argv: list[str]) -> tuple[dict, list[str]]:
    """Pull the global options out of argv wherever they stand (before or after the command)."""
    found: dict = {}
    rest: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("-q", "--quiet"):
            found["log_level"] = "WARNING"
        elif a == "--log-level":
            found["log_level"] = next(it, None)
        elif a.startswith("--log-level="):
            found["log_level"] = a.split("=", 1)[1]
        else:
            rest.append(a)
    level = found.get("log_level")
    if "log_level" in found and (level or "").upper() not in LEVELS:
        raise SystemExit(f"finetune: --log-level: expected one of {', '.join(LEVELS)}, got {level!r}")
    return found, rest


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="finetune", description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="The stages run with `dvc repro` (dvc.yaml); see docs/ for each command.")
    ap.add_argument("--log-level", choices=LEVELS, help="logging level (default INFO; also PIPELINE_LOG_LEVEL)")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return ap


def main(argv: list[str] | None = None) -> None:
    found, rest = split_globals(list(sys.argv[1:] if argv is None else argv))
    if found.get("log_level"):
        os.environ["PIPELINE_LOG_LEVEL"] = found["log_level"].upper()
    command = next((a for a in rest if not a.startswith("-")), None)
    if command is None or command not in COMMANDS:
        ap = parser()
        if command is None:
            ap.print_help()
            raise SystemExit(0 if any(a in ("-h", "--help") for a in rest) else 2)
        ap.error(f"unknown command {command!r}: choose from {', '.join(COMMANDS)}")
    i = rest.index(command)
    module = importlib.import_module(COMMANDS[command][0])
    module.main(rest[:i] + rest[i + 1:], prog=f"finetune {command}")


if __name__ == "__main__":
    main()
