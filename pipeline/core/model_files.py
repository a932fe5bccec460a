"""What any model folder is made of, whatever scores it: its md5, the bytes of its weights, and the error a folder
that cannot be scored raises (shared by scoring.py and token_scoring.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.core.io import KnownError


class ScoringError(KnownError):
    """A model folder that cannot be scored with (not a packaged model, unreadable files)."""


def model_hash(folder: Path) -> str:
    """md5 over the folder's files (names and bytes): identifies exactly which model scored a file."""
    h = hashlib.md5()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def weights_size(folder: Path) -> int:
    """The bytes of a folder's weight files (safetensors, skops)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".skops"))


def model_info(model) -> dict:
    """GET /model's and predict's record of a loaded model: where, what kind, its md5, labels and lineage."""
    lin = model.lineage
    return {"path": str(model.folder), "kind": model.kind, "md5": model.hash, "labels": model.label_names,
            "stage": lin.get("stage"), "base_model": lin.get("base_model") or lin.get("teacher"),
            "seed": lin.get("seed"), "params": lin.get("params", {}), "data": lin.get("data", {}),
            "export": lin.get("export"), "temperature": lin.get("temperature")}


def holds_onnx(folder: Path) -> bool:
    from pipeline.core.onnx_model import ONNX_FILE

    return (folder / ONNX_FILE).is_file()


def onnx_size(folder: Path) -> int:
    from pipeline.core.onnx_model import ONNX_FILE

    return (folder / ONNX_FILE).stat().st_size
