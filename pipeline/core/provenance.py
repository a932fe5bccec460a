"""Where a raw file came from: the sidecar record `finetune fetch` writes next to a file it fetched from the Hub.

Shared code (a core module): the fetch command writes the record, the evaluate stage copies it into each packaged
model's lineage. Neither imports the other.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.io import file_md5

SIDECAR = ".source.json"


def sidecar(raw: str | Path) -> Path:
    return Path(str(raw) + SIDECAR)


def source_record(raw: str | Path) -> dict | None:
    """The fetch record of a raw file, if it was fetched and is unchanged since (its md5 matches)."""
    path = sidecar(raw)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    record["unchanged_since_fetch"] = record.get("md5") == file_md5(raw)
    return record
