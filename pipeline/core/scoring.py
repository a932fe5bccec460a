"""One interface over every packaged model folder for `predict`, `serve`, `monitor`, `evaluate` and the engine.

`open_model(folder)` returns one class per kind of model — `TorchModel` (a transformers folder), `OnnxModel` (the
exported student), `BaselineModel` (TF-IDF + logistic regression, skops) — each knowing its own files; callers use
the shared interface (read, normalise, logits, proba, score, predictor, info, hash) and never ask which kind it is.
Texts are normalised exactly as `clean` normalised the training data (pipeline.core.text.normalise_text with the
clean params recorded in the model's lineage.json), so there is no training/serving skew.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core.io import LINEAGE_FILE, read_lineage
from pipeline.core.metrics import softmax
from pipeline.core.model_files import ScoringError, holds_onnx, model_hash, model_info, onnx_size, weights_size  # noqa: F401 - part of this interface
from pipeline.core.params import CleanParams, build
from pipeline.core.text import normalise_text


def git_rev(cwd: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(cwd), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


class PackagedModel:
    """A packaged model folder, scored in-process, or on a batch-inference engine (`engine`, e.g. a RayEngine) that
    forms the same batches. Subclasses load their files and produce logits or probabilities; all else is shared."""

    kind = "model"  # a name for people (info, logs, OpenAPI text): nothing branches on it
    library = ""  # the model card's library_name
    tokenizer: Any = None  # the subword tokenizer it reads texts with (None: it has none)
    reads_tokens = True  # it reads a token budget of each text (max_length), so a long text can be cut

    def __init__(self, folder: Path, lineage: dict, threads: int = 0, device: str = "cpu", engine: Any = None) -> None:
        self.folder, self.lineage = folder, lineage
        self.clean = build(CleanParams, lineage.get("clean", {}), "clean")
        self.max_chars = self.clean.max_chars
        self.device, self.engine = device, engine
        self.label_names: list[str] = []
        self.load(threads)
        self.hash = model_hash(folder)

    @staticmethod
    def holds(folder: Path) -> bool:
        """Whether `folder` is a model of this kind (by the files it holds)."""
        raise NotImplementedError

    @staticmethod
    def size_bytes(folder: Path) -> int:
        """The bytes of the model's weights in `folder` (what a deployment ships; tokenizer and card excluded)."""
        raise NotImplementedError

    @staticmethod
    def set_temperature(folder: Path, temperature: float) -> None:
        """Make the model in `folder` give probabilities divided by `temperature` (argmax unchanged) to every
        consumer that loads it."""
        raise NotImplementedError

    @staticmethod
    def usage(folder: Path, example: str) -> str:
        """The model card's `Use` snippet: how to load this kind of folder and score `example`."""
        raise NotImplementedError

    def load(self, threads: int) -> None:
        raise NotImplementedError

    def read(self, texts: list[str]) -> list[str]:
        """The texts as the model reads them (head_tail truncation applied): what its batches are sorted by."""
        return list(texts)

    def info(self) -> dict:
        return model_info(self)

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
        """Parameter count where the model has countable torch parameters."""
        return None

    def encoder_folder(self) -> Path | None:
        """A transformers folder whose encoder can embed texts for drift checks (None: this kind has none)."""
        return None

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits (before any calibration temperature)."""
        if self.engine is not None:
            return self.engine.run(self, texts, batch_size, "logits")
        return self.local_logits(texts, batch_size)

    def local_logits(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise ScoringError(f"{self.folder}: a {self.kind} model has probabilities, not logits")

    def proba(self, texts: list[str], batch_size: int = 32, dtype: Any = np.float32) -> np.ndarray:
        """Class probabilities for non-empty, normalised texts (calibrated where the model was)."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=dtype)
        return self.proba_from_logits(self.logits(texts, batch_size))

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    def test_proba(self, texts: list[str], val_texts: list[str], y_val: np.ndarray, batch_size: int,
                   calibrate: bool) -> tuple[np.ndarray, np.ndarray, float | None]:
        """evaluate's view: (raw probabilities, probabilities as packaged, temperature or None). A model with logits
        gets a temperature fitted on the validation rows (never on test): argmax is unchanged by it."""
        logits = self.logits(texts, batch_size)
        raw = softmax(logits)
        if not calibrate:
            return raw, raw, None
        from pipeline.core.stats import fit_temperature

        temperature = round(fit_temperature(self.logits(val_texts, batch_size), y_val), 4)
        return raw, softmax(logits, temperature), temperature

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        """One forward pass over a batch, as it is timed: no sorting, no progress bar, nothing kept."""
        raise NotImplementedError

    def output_columns(self, scored: list[dict]) -> dict[str, Any]:
        """predict's columns for these results: the label, its confidence and each class's probability."""
        import pandas as pd

        cols = {"prediction": pd.Series([s["label"] for s in scored], dtype="string"),
                "confidence": pd.Series([s["confidence"] for s in scored], dtype="float64")}
        for name in self.label_names:
            cols[f"p_{name}"] = pd.Series([None if s["probabilities"] is None else s["probabilities"][name]
                                           for s in scored], dtype="float64")
        return cols

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

    # What the prediction log (pipeline/core/predlog.py) and `monitor` read of a scored text: the class and its
    # probability, and every class's probability.
    def log_schema(self) -> list[tuple[str, str]]:
        return [("prediction", "string"), ("confidence", "float64"),
                *((f"p_{n}", "float64") for n in self.label_names)]

    def log_fields(self, result: dict) -> dict[str, Any]:
        p = result["probabilities"] or {}
        return {"prediction": result["label"], "confidence": result["confidence"],
                **{f"p_{n}": p.get(n) for n in self.label_names}}

    @staticmethod
    def categories(prediction: str) -> list[str]:
        """The categories a logged `prediction` counts for in monitor's mix check: its class."""
        return [prediction]

    def label_rankings(self, texts: list[str], teacher: Any = None) -> tuple[dict[str, list], list[tuple]]:
        """For `monitor --to-label`: (columns per text: prediction, confidence, teacher_prediction; rankings, each
        (reason, score per text, higher = more worth a label)): the lowest top-class probability, and the
        total-variation distance between the teacher's probabilities and this model's."""
        probs = self.proba(texts)
        names = self.label_names
        cols: dict[str, list] = {"prediction": [names[i] for i in probs.argmax(1)],
                                 "confidence": list(probs.max(1)), "teacher_prediction": [None] * len(texts)}
        rankings: list[tuple] = [("least_confident", 1.0 - probs.max(1))]
        if teacher is not None:
            t_probs = teacher.proba(texts)[:, [teacher.label_names.index(nm) for nm in names]]
            cols["teacher_prediction"] = [names[i] for i in t_probs.argmax(1)]
            rankings.append(("teacher_disagrees", 0.5 * np.abs(t_probs - probs).sum(1)))
        return cols, rankings


class OnnxModel(PackagedModel):
    """The exported (int8 or fp32) student: model.onnx, run by onnxruntime."""

    kind = "onnx"
    library = "onnx"

    holds = staticmethod(holds_onnx)
    size_bytes = staticmethod(onnx_size)

    @staticmethod
    def set_temperature(folder: Path, temperature: float) -> None:
        # The graph stays as exported (parity was checked on it); OnnxClassifier divides logits by this.
        cfg = json.loads((folder / "config.json").read_text())
        cfg["calibration_temperature"] = temperature
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    @staticmethod
    def usage(folder: Path, example: str) -> str:
        return (f'```bash\nfinetune predict --model {folder} --input new.csv --output scored.parquet\n'
                f'finetune serve --model {folder}   # POST /predict {{"texts": [...]}}\n```\n'
                f'```python\nfrom pipeline.core.onnx_model import OnnxClassifier\n'
                f'OnnxClassifier("{folder}").predict_proba([{example!r}])\n```')

    def load(self, threads: int) -> None:
        from pipeline.core.onnx_model import OnnxClassifier

        self.onnx = OnnxClassifier(self.folder, threads=threads)
        self.tokenizer = self.onnx.tokenizer
        self.label_names = self.onnx.label_names

    def read(self, texts: list[str]) -> list[str]:
        from pipeline.core.modeling import read_texts

        return read_texts(texts, self.onnx.tokenizer, self.onnx.max_length, self.onnx.truncation)

    def encoder_folder(self) -> Path | None:
        # evaluate packages models/student-onnx beside models/student, the transformers model it was exported from
        sibling = self.folder.with_name(self.folder.name.removesuffix("-onnx"))
        return sibling if sibling != self.folder and TorchModel.holds(sibling) else None

    def local_logits(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.onnx.logits(texts, batch_size)

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return self.onnx.proba_from_logits(logits)

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        return lambda batch: self.onnx.logits(batch, batch_size)


class BaselineModel(PackagedModel):
    """TF-IDF + logistic regression, loaded with skops (no code from the file runs)."""

    kind = "baseline"
    library = "sklearn"
    reads_tokens = False  # TF-IDF sees the whole text

    @staticmethod
    def holds(folder: Path) -> bool:
        from pipeline.core.modeling import BASELINE_FILE

        return (folder / BASELINE_FILE).is_file()

    @staticmethod
    def size_bytes(folder: Path) -> int:
        return weights_size(folder)

    @staticmethod
    def set_temperature(folder: Path, temperature: float) -> None:
        raise ScoringError(f"{folder}: a baseline's probabilities are scikit-learn's own; it takes no temperature")

    @staticmethod
    def usage(folder: Path, example: str) -> str:
        return (f'```python\nfrom pipeline.core.modeling import load_baseline  # skops: loads no code from the file\n'
                f'clf = load_baseline("{folder}")\n'
                f'clf.predict([{example!r}])\n```')

    def load(self, threads: int) -> None:
        from pipeline.core.modeling import load_baseline

        self.baseline = load_baseline(self.folder)
        self.label_names = list(self.lineage["label_names"])

    def proba(self, texts: list[str], batch_size: int = 32, dtype: Any = np.float32) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=dtype)
        if self.engine is not None:
            return np.asarray(self.engine.run(self, texts, batch_size, "proba"), dtype=dtype)
        return np.asarray(self.baseline.predict_proba(texts), dtype=dtype)

    def test_proba(self, texts: list[str], val_texts: list[str], y_val: np.ndarray, batch_size: int,
                   calibrate: bool) -> tuple[np.ndarray, np.ndarray, float | None]:
        prob = self.proba(texts, batch_size, dtype=np.float64)  # scikit-learn's own precision, not rescaled
        return prob, prob, None

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        return self.baseline.predict_proba


class TorchModel(PackagedModel):
    """A transformers sequence-classification folder (the teacher or the torch student)."""

    kind = "transformers"
    library = "transformers"

    @staticmethod
    def holds(folder: Path) -> bool:
        return (folder / "config.json").is_file() and not OnnxModel.holds(folder) and not BaselineModel.holds(folder)

    @staticmethod
    def size_bytes(folder: Path) -> int:
        return weights_size(folder)

    @staticmethod
    def set_temperature(folder: Path, temperature: float) -> None:
        """The classification layer divided by the temperature, so transformers.pipeline gets the calibrated
        probabilities too."""
        import torch

        from pipeline.core.modeling import load_classifier

        model = load_classifier(str(folder), str(folder))
        n = model.config.num_labels
        heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n]
        if not heads:
            raise ScoringError(f"{folder}: no linear layer with {n} outputs to scale by the temperature")
        with torch.no_grad():  # logits = W h + b, so (W / T) h + b / T = logits / T exactly
            heads[-1].weight.div_(temperature)
            if heads[-1].bias is not None:
                heads[-1].bias.div_(temperature)
        model.config.calibration_temperature = temperature
        model.save_pretrained(folder, safe_serialization=True)

    @staticmethod
    def usage(folder: Path, example: str) -> str:
        return (f'```python\nfrom transformers import pipeline\n'
                f'clf = pipeline("text-classification", model="{folder}")\nclf({example!r})\n```')

    def load(self, threads: int) -> None:
        from pipeline.core.modeling import lineage_max_length, lineage_truncation, load_classifier, load_tokenizer

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model = load_classifier(str(self.folder), str(self.folder))
        self.tokenizer = load_tokenizer(str(self.folder), str(self.folder))
        self.max_length = lineage_max_length(self.lineage)
        self.truncation = lineage_truncation(self.lineage)
        self.label_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def read(self, texts: list[str]) -> list[str]:
        from pipeline.core.modeling import read_texts

        return read_texts(texts, self.tokenizer, self.max_length, self.truncation)

    @property
    def parameters(self) -> int | None:
        return int(sum(x.numel() for x in self.model.parameters()))

    def encoder_folder(self) -> Path | None:
        return self.folder

    def local_logits(self, texts: list[str], batch_size: int) -> np.ndarray:
        from pipeline.core.modeling import pick_device, predict_logits

        return predict_logits(self.model, self.tokenizer, texts, batch_size, self.max_length,
                              device=pick_device(self.device), truncation=self.truncation, progress=False)

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        import torch

        from pipeline.core.modeling import read_texts

        model, tok, max_length = self.model.to("cpu").eval(), self.tokenizer, self.max_length

        def forward(batch: list[str]) -> Any:
            enc = tok(read_texts(batch, tok, max_length, self.truncation), padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
            with torch.inference_mode():
                return model(**enc).logits

        return forward


KINDS = (OnnxModel, BaselineModel, TorchModel)  # the first whose files a folder holds is its kind


def kind_of(folder: Path) -> type[PackagedModel]:
    """The class of the model in `folder`, by its files, without loading it."""
    for kind in KINDS:
        if kind.holds(folder):
            return kind
    raise ScoringError(f"{folder}: holds no model files (model.onnx, model.skops, or config.json and weights)")


def open_model(folder: str | Path, threads: int = 0, device: str = "cpu", engine: Any = None) -> PackagedModel:
    """The packaged model in `folder`, of whichever kind its files say. `device` places a torch model
    (cpu | cuda | auto); `engine` scores on a batch-inference engine that forms the same batches."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / LINEAGE_FILE).is_file():
        raise ScoringError(f"{folder}: not a packaged model (no {LINEAGE_FILE}); use models/student-onnx, "
                           "models/student, models/teacher or models/baseline after `dvc repro`")
    from pipeline.core.token_scoring import holds_tagger, open_tagger

    if holds_tagger(folder):  # a tag per word: the same calls (score, info, predictor), spans for answers
        return open_tagger(folder, threads, device)
    return kind_of(folder)(folder, read_lineage(folder), threads, device, engine)
