"""The token task's classical baseline: a linear-chain CRF (CRFsuite, through python-crfsuite) on word-shape, affix
and neighbour features, the bar a fine-tuned encoder must clear on entity F1.

The model file is CRFsuite's own binary format, written by its trainer and read by its tagger: loading it runs no
code (sklearn-crfsuite's CRF object would be a pickle). Features are the classic ones (the CoNLL-2003 shared task
systems, sklearn-crfsuite's tutorial): the lower-cased word, its prefixes and suffixes, its shape (`Xxxx`, `dd`,
`x.x`), case and digit flags, whether it is a user handle, hashtag or URL as tweets have them, and the same for the
words up to two either side. Training is L-BFGS over the whole set in file order, so the same rows and params give
the same model bytes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

MODEL_FILE = "model.crfsuite"
_SHAPE = [(re.compile(r"[A-Z]"), "X"), (re.compile(r"[a-z]"), "x"), (re.compile(r"[0-9]"), "d")]


CRF_FILE = "model.crfsuite"  # CRFsuite's own format: weights and labels, no code


def shape(word: str, short: bool = False) -> str:
    """'McDonald2' -> 'XxXxxxxxd', or with `short` each run once: 'XxXxd'."""
    s = word
    for pattern, mark in _SHAPE:
        s = pattern.sub(mark, s)
    return re.sub(r"(.)\1+", r"\1", s) if short else s


def _word(w: str, prefix: str) -> dict[str, object]:
    return {f"{prefix}lower": w.lower(), f"{prefix}shape": shape(w, short=True), f"{prefix}title": w.istitle(),
            f"{prefix}upper": w.isupper(), f"{prefix}digit": w.isdigit()}


def word_features(words: list[str], i: int) -> dict[str, object]:
    """The features of word i of a sentence: itself in detail, its neighbours (two each side) more coarsely."""
    w = words[i]
    f: dict[str, object] = {"bias": 1.0, **_word(w, ""), "shape_long": shape(w)[:12], "length": min(len(w), 12),
                            "handle": w.startswith("@") and len(w) > 1, "hashtag": w.startswith("#") and len(w) > 1,
                            "url": w.lower().startswith(("http", "www.")), "alpha": w.isalpha()}
    for n in (1, 2, 3, 4):
        f[f"prefix{n}"], f[f"suffix{n}"] = w[:n].lower(), w[-n:].lower()
    for offset in (-2, -1, 1, 2):
        j = i + offset
        if 0 <= j < len(words):
            f.update(_word(words[j], f"{offset:+d}:"))
        else:
            f[f"{offset:+d}:edge"] = True  # the sentence's start or end
    return f


def sentence_features(words: list[str]) -> list[dict[str, object]]:
    return [word_features(words, i) for i in range(len(words))]


def train_crf(sentences: list[list[str]], tags: list[list[str]], path: Path, c1: float = 0.1, c2: float = 0.1,
              max_iterations: int = 100) -> None:
    """Fit a CRF on sentences of words with their BIO tags and write it to `path` (CRFsuite's format)."""
    import pycrfsuite

    trainer = pycrfsuite.Trainer(verbose=False)
    for words, t in zip(sentences, tags):
        trainer.append(sentence_features(words), t)
    trainer.set_params({"c1": c1, "c2": c2, "max_iterations": max_iterations,
                        "feature.possible_transitions": True})
    trainer.train(str(path))


class CrfTagger:
    """A trained CRF: the best tag sequence of a sentence, and each word's marginal probability of every tag."""

    def __init__(self, path: Path):
        import pycrfsuite

        self.tagger = pycrfsuite.Tagger()
        self.tagger.open(str(path))
        self.labels = sorted(self.tagger.labels())

    def tag(self, words: list[str]) -> list[str]:
        return list(self.tagger.tag(sentence_features(words))) if words else []

    def marginals(self, words: list[str]) -> np.ndarray:
        """[words, labels] (labels in `self.labels` order): the probability each word carries each tag."""
        self.tagger.set(sentence_features(words))
        return np.array([[self.tagger.marginal(label, i) for label in self.labels] for i in range(len(words))],
                        dtype=np.float32).reshape(len(words), len(self.labels))
