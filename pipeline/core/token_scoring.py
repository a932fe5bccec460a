"""One interface over every token model folder (the token task's `scoring.py`): a transformers token classifier, its
ONNX export, the CRF baseline. Each gives per-word logits for sentences of words; what is shared on top of that is
here once: tags, and for raw text the entity spans with character offsets.

Raw text is cut into words by token_io.words (the pre-tokeniser span files were read with) and each word normalised
by token_clean.normalise_tokens with the clean params recorded in the model's lineage: the words a model is served
are the words it was trained on. Offsets point into the raw text as it was sent.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from pipeline.core.io import LINEAGE_FILE, read_lineage
from pipeline.core.metrics import label_index
from pipeline.core.model_files import ScoringError, holds_onnx, model_hash, model_info, onnx_size, weights_size
from pipeline.core.params import CleanParams, build
from pipeline.core.token_encoding import entity_spans, predicted_tags

DEFAULT_STRIDE = 32  # params.tokens.stride's default, for a folder that does not record its own


class EntitySpan(BaseModel):
    start: int = Field(..., description="character offset of the entity's first character in the text sent")
    end: int = Field(..., description="offset just past its last character: text[start:end] is the entity")
    type: str
    text: str
    score: float = Field(..., description="the mean of its words' tag probabilities")


class EntityPrediction(BaseModel):
    status: str = Field(..., description="`ok`, or why the text could not be tagged (e.g. `empty_text`)")
    entities: list[EntitySpan] | None = None


class EntityResponse(BaseModel):
    model_md5: str
    request_id: str = Field(..., description="this request's id")
    predictions: list[EntityPrediction]


class WordTagger:
    """A token model folder. Subclasses load their files and give per-word logits; the rest is shared."""

    kind = "token model"
    library = ""
    response_model = EntityResponse  # what `serve` answers for it (OpenAPI included)
    tokenizer: Any = None  # the sub-word tokenizer it reads words with (None: it has none)

    def __init__(self, folder: Path, lineage: dict | None = None, threads: int = 0, device: str = "cpu",
                 stride: int | None = None) -> None:
        self.folder = Path(folder)
        self.lineage = read_lineage(self.folder) if lineage is None else lineage
        self.clean = build(CleanParams, self.lineage.get("clean", {}), "clean")
        self.device = device
        cfg = self.folder / "config.json"
        recorded = json.loads(cfg.read_text()).get("window_stride") if cfg.is_file() else None
        self.stride = stride if stride is not None else recorded if recorded is not None else DEFAULT_STRIDE
        self.label_names: list[str] = self.lineage.get("label_names", [])
        self.load(threads)
        self.hash = model_hash(self.folder)

    @staticmethod
    def holds(folder: Path) -> bool:
        raise NotImplementedError

    @staticmethod
    def size_bytes(folder: Path) -> int:
        return weights_size(folder)

    def load(self, threads: int) -> None:
        raise NotImplementedError

    @property
    def parameters(self) -> int | None:
        return None

    def word_logits(self, sentences: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
        """Per sentence, [words, labels] logits (a NaN row: a word no window read, tagged O)."""
        raise NotImplementedError

    def tags(self, sentences: list[list[str]], batch_size: int = 32) -> tuple[list[list[str]], list[np.ndarray]]:
        """BIO tags per sentence (as served: a stray I- opens an entity) and each word's probability of its tag."""
        out = [predicted_tags(x, self.label_names) for x in self.word_logits(sentences, batch_size)]
        return [t for t, _ in out], [s for _, s in out]

    def words(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Raw text -> the normalised words the model reads and their offsets in `text` (emptied words dropped)."""
        from pipeline.core.token_clean import normalise_tokens
        from pipeline.core.token_io import words

        found = words(text)
        norm = normalise_tokens([w for w, _, _ in found], self.clean)
        kept = [(n, (s, e)) for n, (_, s, e) in zip(norm, found) if n]
        return [n for n, _ in kept], [o for _, o in kept]

    def spans(self, texts: list[Any], batch_size: int = 32) -> list[dict]:
        """Per raw text: status (`ok`, `empty_text`, `non_string_text`) and its entities as character spans."""
        status = ["non_string_text" if not isinstance(t, str) else "ok" for t in texts]
        read = [self.words(t) if s == "ok" else ([], []) for t, s in zip(texts, status)]
        status = [s if s != "ok" or ws else "empty_text" for s, (ws, _) in zip(status, read)]
        ok = [i for i, s in enumerate(status) if s == "ok"]
        tags, scores = self.tags([read[i][0] for i in ok], batch_size) if ok else ([], [])
        out = [{"status": s, "entities": None} for s in status]
        for i, t, sc in zip(ok, tags, scores):
            out[i] = {"status": "ok", "entities": entity_spans(texts[i], read[i][1], t, sc)}
        return out

    def score(self, texts: list[Any], batch_size: int = 32) -> list[dict]:
        return self.spans(texts, batch_size)

    def normalise(self, texts: list[Any]) -> tuple[list[str], list[str]]:
        """(each text as the words the model reads, joined by one space; status per text), as `monitor` compares
        texts."""
        read = [self.words(t)[0] if isinstance(t, str) else None for t in texts]
        return ([" ".join(w or ()) for w in read],
                ["non_string_text" if w is None else "ok" if w else "empty_text" for w in read])

    def encoder_folder(self) -> Path | None:
        """A transformers folder whose encoder can embed texts for drift checks (None: this kind has none)."""
        return None

    # What the prediction log (pipeline/core/predlog.py) and `monitor` read of a scored text: its entities' types
    # (joined by `|`, in text order) and their mean score, and the spans themselves.
    def log_schema(self) -> list[tuple[str, str]]:
        return [("prediction", "string"), ("confidence", "float64"), ("entities", "string"), ("n_entities", "int64")]

    def log_fields(self, result: dict) -> dict[str, Any]:
        ents = result["entities"]
        if ents is None:
            return {}
        return {"prediction": "|".join(e["type"] for e in ents),
                "confidence": float(np.mean([e["score"] for e in ents])) if ents else None,
                "entities": json.dumps(ents, ensure_ascii=False), "n_entities": len(ents)}

    @staticmethod
    def categories(prediction: str) -> list[str]:
        """The categories a logged `prediction` counts for in monitor's mix check: each entity's type, or `none`
        for a text without entities (the entity-type mix)."""
        return prediction.split("|") if prediction else ["none"]

    def label_rankings(self, texts: list[str], teacher: Any = None) -> tuple[dict[str, list], list[tuple]]:
        """For `monitor --to-label`: (columns per text: prediction, the entity spans as JSON for a person to
        correct; confidence, the weakest word's tag probability; teacher_prediction, the teacher's spans; rankings):
        least confident (1 - that weakest probability: the word the model is least sure of, entity or not), and
        the share of words the teacher tags differently."""
        read = [self.words(t) for t in texts]
        tags, probs = self.tags([w for w, _ in read])
        weakest = np.array([float(p.min()) if len(p) else 1.0 for p in probs])
        cols: dict[str, list] = {
            "prediction": [json.dumps(entity_spans(t, o, g, p), ensure_ascii=False)
                           for t, (_, o), g, p in zip(texts, read, tags, probs)],
            "confidence": list(weakest), "teacher_prediction": [None] * len(texts)}
        rankings: list[tuple] = [("least_confident", 1.0 - weakest)]
        if teacher is not None:
            t_tags, t_probs = teacher.tags([w for w, _ in read])
            cols["teacher_prediction"] = [json.dumps(entity_spans(t, o, g, p), ensure_ascii=False)
                                          for t, (_, o), g, p in zip(texts, read, t_tags, t_probs)]
            rankings.append(("teacher_disagrees", np.array([np.mean([a != b for a, b in zip(x, y)]) if x else 0.0
                                                            for x, y in zip(tags, t_tags)])))
        return cols, rankings

    def output_columns(self, scored: list[dict]) -> dict[str, pd.Series]:
        """predict's columns: the entities as JSON ([{start, end, type, text, score}]) and how many."""
        ents = [None if s["entities"] is None else json.dumps(s["entities"], ensure_ascii=False) for s in scored]
        return {"entities": pd.Series(ents, dtype="string"),
                "n_entities": pd.Series([None if s["entities"] is None else len(s["entities"]) for s in scored],
                                        dtype="Int64")}

    def predictor(self, batch_size: int = 32) -> Callable[[list[str]], Any]:
        """One pass over a batch of raw texts, as it is timed (words, windows, model, tags)."""
        return lambda texts: self.spans(texts, batch_size)

    def info(self) -> dict:
        return model_info(self)


class TorchTagger(WordTagger):
    """A transformers token-classification folder (the teacher or the torch student)."""

    kind = "transformers"
    library = "transformers"

    @staticmethod
    def holds(folder: Path) -> bool:
        return (folder / "config.json").is_file() and not OnnxTagger.holds(folder) and not CrfWordTagger.holds(folder)

    def load(self, threads: int) -> None:
        from pipeline.core.modeling import lineage_max_length, load_token_classifier, load_tokenizer

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model = load_token_classifier(str(self.folder), str(self.folder))
        self.tokenizer = load_tokenizer(str(self.folder), str(self.folder))
        self.max_length = lineage_max_length(self.lineage)
        cfg = self.model.config
        self.label_names = [cfg.id2label[i] for i in range(cfg.num_labels)]

    @property
    def parameters(self) -> int | None:
        return int(sum(x.numel() for x in self.model.parameters()))

    def encoder_folder(self) -> Path | None:
        return self.folder

    def word_logits(self, sentences: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
        from pipeline.core.modeling import pick_device
        from pipeline.core.token_encoding import encode_words
        from pipeline.core.token_training import predict_word_logits

        enc = encode_words(sentences, self.tokenizer, self.max_length, self.stride)
        return predict_word_logits(self.model, enc, batch_size, pick_device(self.device))[0]


class OnnxTagger(WordTagger):
    """An exported token classifier: model.onnx (int8 or fp32) + tokenizer + config.json."""

    kind = "onnx"
    library = "onnx"

    def __init__(self, folder: Path, lineage: dict | None = None, threads: int = 0, device: str = "cpu",
                 stride: int | None = None, file: str = "") -> None:
        self.file = file
        super().__init__(folder, lineage, threads, device, stride)

    holds = staticmethod(holds_onnx)
    size_bytes = staticmethod(onnx_size)

    def encoder_folder(self) -> Path | None:
        # evaluate packages models/student-onnx beside models/student, the transformers model it was exported from
        sibling = self.folder.with_name(self.folder.name.removesuffix("-onnx"))
        return sibling if sibling != self.folder and TorchTagger.holds(sibling) else None

    def load(self, threads: int) -> None:
        from pipeline.core.onnx_model import ONNX_FILE, OnnxClassifier

        self.onnx = OnnxClassifier(self.folder, self.file or ONNX_FILE, threads)
        self.tokenizer, self.max_length = self.onnx.tokenizer, self.onnx.max_length
        self.label_names = self.onnx.label_names

    def word_logits(self, sentences: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
        from pipeline.core.onnx_model import flush_denormals
        from pipeline.core.token_encoding import encode_words
        from pipeline.core.token_training import run_windows

        flush_denormals()
        enc = encode_words(sentences, self.tokenizer, self.max_length, self.stride)
        inputs = self.onnx.inputs
        return run_windows(lambda f: self.onnx.session.run(["logits"], {k: v for k, v in f.items() if k in inputs})[0],
                           enc, batch_size)[0]


class CrfWordTagger(WordTagger):
    """The CRF baseline: each word's log marginal probability of every tag as its logits."""

    kind = "crf"
    library = "python-crfsuite"

    @staticmethod
    def holds(folder: Path) -> bool:
        from pipeline.core.crf import CRF_FILE

        return (folder / CRF_FILE).is_file()

    @staticmethod
    def size_bytes(folder: Path) -> int:
        from pipeline.core.crf import CRF_FILE

        return (folder / CRF_FILE).stat().st_size

    def load(self, threads: int) -> None:
        from pipeline.core.crf import CRF_FILE, CrfTagger

        self.crf = CrfTagger(self.folder / CRF_FILE)
        self.cols = [self.label_names.index(t) for t in self.crf.labels]

    def word_logits(self, sentences: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
        out = []
        for words in sentences:
            probs = np.zeros((len(words), len(self.label_names)), dtype=np.float32)
            if words:
                probs[:, self.cols] = self.crf.marginals(list(words))
            out.append(np.log(np.clip(probs, 1e-12, 1.0)))
        return out

    def tags(self, sentences: list[list[str]], batch_size: int = 32) -> tuple[list[list[str]], list[np.ndarray]]:
        """The CRF's best sequence (Viterbi), as a CRF is scored, with each word's marginal of its tag."""
        tags = [self.crf.tag(list(w)) for w in sentences]
        logits = self.word_logits(sentences)
        index = label_index(self.label_names)
        return tags, [np.exp(x[np.arange(len(t)), [index[g] for g in t]]) if len(t) else np.zeros(0)
                      for x, t in zip(logits, tags)]


TAGGERS = (OnnxTagger, CrfWordTagger, TorchTagger)  # the first whose files a folder holds is its kind


def holds_tagger(folder: Path) -> bool:
    """Whether `folder` holds a token model: a CRF, or a transformers/ONNX folder of a token-classification head."""
    from pipeline.core.crf import CRF_FILE

    cfg = folder / "config.json"
    heads = json.loads(cfg.read_text()).get("architectures") or [] if cfg.is_file() else []
    return (folder / CRF_FILE).is_file() or any(h.endswith("ForTokenClassification") for h in heads)


def open_tagger(folder: str | Path, threads: int = 0, device: str = "cpu", stride: int | None = None) -> WordTagger:
    folder = Path(folder)
    if not (folder / LINEAGE_FILE).is_file():
        raise ScoringError(f"{folder}: not a token model folder (no {LINEAGE_FILE})")
    for cls in TAGGERS:
        if cls.holds(folder):
            return cls(folder, None, threads, device, stride)
    raise ScoringError(f"{folder}: holds no token model files (model.onnx, model.crfsuite, or config.json and "
                       "weights)")
