"""fetch: a Hugging Face Hub dataset -> a local, versioned raw file the pipeline depends on.

    finetune fetch hf:<dataset>[:<config>]:<split> --revision <tag|branch|sha> --output data/raw/<name>.parquet

DVC versions files, not Hub names: `raw: hf:imdb:train` in dvc.yaml was a dependency on a file that does not exist.
So a Hub dataset is fetched once, at a pinned revision, into a Parquet file that `dvc add` (or a commit) versions
like any raw file; the resolved commit sha, the source and the row count go to `<output>.source.json`, which
`clean` copies into its metrics, so the lineage of every model names the Hub revision its data came from.
`<dataset>` may also be a local folder of data files (what the tests use: no network).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.core.io import DataError, atomic_path, file_md5, run_stage, setup_logging
from pipeline.core.provenance import sidecar

log = logging.getLogger(__name__)



def parse_source(source: str) -> tuple[str, str | None, str]:
    parts = source.split(":")[1:] if source.startswith("hf:") else []
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(f"{source}: expected hf:<dataset>:<split> or hf:<dataset>:<config>:<split>")
    return (parts[0], None, parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])


def resolve_revision(name: str, revision: str | None) -> str | None:
    """The commit sha `revision` points at on the Hub (a branch moves; the sha does not). None for a local folder."""
    if Path(name).is_dir():
        return None
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(name, revision=revision).sha
    except Exception as e:  # offline, unknown name or revision: several exception types
        raise DataError(f"hf:{name}: cannot resolve revision {revision!r} on the Hub: {e}") from e


def fetch(source: str, revision: str | None, output: Path) -> dict:
    import datasets

    name, config, split = parse_source(source)
    local = Path(name).is_dir()
    if not local and not revision:
        raise DataError(f"{source}: pass --revision (a tag, branch or commit sha): an unpinned Hub dataset can change "
                        "under the same name")
    sha = resolve_revision(name, revision)
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=sha)
    except Exception as e:
        raise DataError(f"{source}: cannot load split {split!r}: {e}") from e
    with atomic_path(output) as tmp:
        ds.to_pandas().to_parquet(tmp, index=False)
    record = {"source": source, "dataset": name, "config": config, "split": split, "revision": revision,
              "resolved_sha": sha, "rows": len(ds), "md5": file_md5(output)}
    if local:
        record["local_files_md5"] = {p.name: file_md5(p) for p in sorted(Path(name).rglob("*")) if p.is_file()}
    with atomic_path(sidecar(output)) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("source", help="hf:<dataset>[:<config>]:<split>")
    ap.add_argument("--revision", help="Hub tag, branch or commit sha (required for Hub datasets)")
    ap.add_argument("--output", required=True, help="the Parquet file to write, e.g. data/raw/imdb-train.parquet")
    args = ap.parse_args(argv)

    def _run() -> None:
        record = fetch(args.source, args.revision, Path(args.output))
        log.info("wrote %d rows to %s (revision %s); next: `dvc add %s` and point `raw` in dvc.yaml at it",
                 record["rows"], args.output, record["resolved_sha"] or "local folder", args.output)

    run_stage(_run)


if __name__ == "__main__":
    main()
