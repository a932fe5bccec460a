"""One interface over every model folder (transformers, ONNX, the baseline) for `predict`, `serve` and `evaluate`.

Texts are normalised exactly as `clean` normalised the training data (pipeline.core.text.normalise_text with the
clean params recorded in the model's lineage.json), so there is no training/serving skew.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core.io import KnownError
from pipeline.core.params import CleanParams, build
from pipeline.core.text import normalise_text


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


def git_rev(cwd: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(cwd), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


class Scorer:
    """A packaged model folder, scored in-process, or on a batch-inference engine (`engine`, e.g. a RayEngine) that
    forms the same batches. `device` places a transformers model (cpu | cuda | auto)."""

    def __init__(self, folder: str | Path, threads: int = 0, device: str = "cpu", engine: Any = None) -> None:
        from pipeline.core.modeling import BASELINE_FILE
        from pipeline.core.onnx_model import ONNX_FILE

        self.folder = Path(folder)
        lin_path = self.folder / "lineage.json"
        if not self.folder.is_dir() or not lin_path.is_file():
            raise ScoringError(f"{folder}: not a packaged model (no lineage.json); use models/student-onnx, "
                               "models/student, models/teacher or models/baseline after `dvc repro`")
        self.lineage = json.loads(lin_path.read_text())
        self.clean = build(CleanParams, self.lineage.get("clean", {}), "clean")
        self.max_chars = self.clean.max_chars
        if (self.folder / ONNX_FILE).is_file():
            from pipeline.core.onnx_model import OnnxClassifier

            self.kind = "onnx"
            self._onnx = OnnxClassifier(self.folder, threads=threads)
            self.label_names = self._onnx.label_names
        elif (self.folder / BASELINE_FILE).is_file():
            from pipeline.core.modeling import load_baseline

            self.kind = "baseline"
            self._baseline = load_baseline(self.folder)
            self.label_names = list(self.lineage["label_names"])
        else:
            from pipeline.core.modeling import load_classifier, load_tokenizer

            self.kind = "transformers"
            if threads:
                import torch

                torch.set_num_threads(threads)
            self._model = load_classifier(str(self.folder), str(self.folder))
            self._tok = load_tokenizer(str(self.folder), str(self.folder))
            from pipeline.core.modeling import lineage_max_length, lineage_truncation

            self._max_length = lineage_max_length(self.lineage)
            self._truncation = lineage_truncation(self.lineage)
            self.label_names = [self._model.config.id2label[i] for i in range(self._model.config.num_labels)]
        self.hash = model_hash(self.folder)
        self.device, self.engine = device, engine

    def read(self, texts: list[str]) -> list[str]:
        """The texts as the model reads them (head_tail truncation applied): what its batches are sorted by."""
        from pipeline.core.modeling import read_texts

        if self.kind == "onnx":
            o = self._onnx
            return read_texts(texts, o.tokenizer, o.max_length, o.truncation)
        if self.kind == "transformers":
            return read_texts(texts, self._tok, self._max_length, self._truncation)
        return list(texts)

    def info(self) -> dict:
        lin = self.lineage
        return {"path": str(self.folder), "kind": self.kind, "md5": self.hash, "labels": self.label_names,
                "stage": lin.get("stage"), "base_model": lin.get("base_model") or lin.get("teacher"),
                "seed": lin.get("seed"), "params": lin.get("params", {}), "data": lin.get("data", {}),
                "export": lin.get("export"), "temperature": lin.get("temperature")}

    def normalise(self, texts: list[Any]) -> tuple[list[str], list[str]]:
        """(normalised texts, status per text): `ok`, or why the text cannot be scored."""
        out, status = [], []
        for t in texts:
            if t is None or (isinstance(t, float) and np.isnan(t)):
                out.append("")
                status.append("empty_text")
            elif not isinstance(t, str):
                out.append("")
                status.append("non_string_text")
            else:
                n = normalise_text(t, self.clean)
                out.append(n)
                status.append("ok" if n else "empty_text")
        return out, status

    @property
    def parameters(self) -> int | None:
        """Parameter count of a transformers model (None for the other kinds)."""
        return int(sum(x.numel() for x in self._model.parameters())) if self.kind == "transformers" else None

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits (before any calibration temperature) of a transformers or ONNX model."""
        if self.kind == "baseline":
            raise ScoringError(f"{self.folder}: the baseline has probabilities, not logits")
        if self.engine is not None:
            return self.engine.run(self, texts, batch_size, "logits")
        if self.kind == "onnx":
            return self._onnx.logits(texts, batch_size)
        from pipeline.core.modeling import pick_device, predict_logits

        return predict_logits(self._model, self._tok, texts, batch_size, self._max_length,
                              device=pick_device(self.device), truncation=self._truncation, progress=False)

    def proba(self, texts: list[str], batch_size: int = 32, dtype: Any = np.float32) -> np.ndarray:
        """Class probabilities for non-empty, normalised texts (calibrated where the model was)."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=dtype)
        if self.kind == "onnx":
            return self._onnx.proba_from_logits(self.logits(texts, batch_size))
        if self.kind == "baseline":
            if self.engine is not None:
                return np.asarray(self.engine.run(self, texts, batch_size, "proba"), dtype=dtype)
            return np.asarray(self._baseline.predict_proba(texts), dtype=dtype)
        from pipeline.core.stats import softmax

        return softmax(self.logits(texts, batch_size))

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        """One forward pass over a batch, as it is timed: no sorting, no progress bar, nothing kept."""
        if self.kind == "onnx":
            return lambda batch: self._onnx.logits(batch, batch_size)
        if self.kind == "baseline":
            return self._baseline.predict_proba
        import torch

        from pipeline.core.modeling import read_texts

        model, tok, max_length = self._model.to("cpu").eval(), self._tok, self._max_length

        def forward(batch: list[str]) -> Any:
            enc = tok(read_texts(batch, tok, max_length, self._truncation), padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
            with torch.inference_mode():
                return model(**enc).logits

        return forward

    def score(self, texts: list[Any], batch_size: int = 32) -> list[dict]:
        """Per text: status, label and per-class probabilities (None where status is not ok)."""
        norm, status = self.normalise(texts)
        ok = [i for i, s in enumerate(status) if s == "ok"]
        probs = self.proba([norm[i] for i in ok], batch_size)
        out: list[dict] = [{"status": s, "label": None, "confidence": None, "probabilities": None} for s in status]
        for i, p in zip(ok, probs):
            k = int(p.argmax())
            out[i] = {"status": "ok", "label": self.label_names[k], "confidence": float(p[k]),
                      "probabilities": {n: float(v) for n, v in zip(self.label_names, p)}}
        return out
