"""The token task's audit: words whose given tag disagrees with what the rest of the data says, found with cleanlab's
token-classification module (confident learning per word) on out-of-fold tag probabilities of a linear-chain CRF
(pipeline/core/crf.py: the baseline's features, cheap enough to fit k times on every core).

A sentence's fold is a hash of (seed, its id), so it does not move when other sentences come or go. Each flagged
word is one row of the issues table (its sentence's id and raw line, the word, its position, the given and the
suggested tag), most suspicious first; `action: drop` removes every sentence that holds a flagged word.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import stable_id
from pipeline.core.metrics import label_index
from pipeline.core.params import AuditParams
from pipeline.core.sequence_audit import ISSUE_COLUMNS, AuditResult, audit_result
from pipeline.core.tags import bio_labels

log = logging.getLogger(__name__)

TOKEN_ISSUE_COLUMNS = [*ISSUE_COLUMNS, "token_index", "word"]


def _fold_probs(train: pd.DataFrame, test: pd.DataFrame, label_names: list[str], path: Path) -> list[np.ndarray]:
    """A CRF fitted on `train`, each `test` word's probability of every tag in `label_names` order."""
    from pipeline.core.crf import CrfTagger, train_crf

    train_crf(train["tokens"].tolist(), train["tags"].tolist(), path)
    tagger = CrfTagger(path)
    cols = [label_names.index(t) for t in tagger.labels]
    out = []
    for words in test["tokens"]:
        probs = np.zeros((len(words), len(label_names)), dtype=np.float32)
        probs[:, cols] = tagger.marginals(list(words))
        out.append(probs)
    return out


def out_of_fold_tag_probs(df: pd.DataFrame, label_names: list[str], folds: int, seed: int, jobs: int
                          ) -> list[np.ndarray]:
    from joblib import Parallel, delayed

    fold = np.array([int(stable_id(seed, "audit", i), 16) % folds for i in df["id"]])
    with tempfile.TemporaryDirectory() as folder:
        parts = Parallel(n_jobs=jobs)(delayed(_fold_probs)(df[fold != k], df[fold == k], label_names,
                                                                      Path(folder) / f"fold-{k}.crfsuite")
                                      for k in range(folds))
    probs: list[np.ndarray] = [np.empty(0)] * len(df)
    for k, part in enumerate(parts):
        for i, p in zip(np.flatnonzero(fold == k), part):
            probs[i] = p
    return probs


def audit_tokens(df: pd.DataFrame, p: AuditParams, seed: int) -> AuditResult:
    """Pure core: flag words whose given tag the out-of-fold CRF finds unlikely, as confident learning judges."""
    from cleanlab.token_classification.filter import find_label_issues

    df = df.reset_index(drop=True)
    no_drop = df.iloc[:0].assign(reason=pd.Series(dtype=object))
    folds = min(p.folds, len(df))
    if not p.enabled or folds < 2:
        return AuditResult(df, pd.DataFrame(columns=TOKEN_ISSUE_COLUMNS), no_drop, 0)
    label_names = bio_labels(df["tags"].tolist())
    index = label_index(label_names)
    given = [[index[t] for t in tags] for tags in df["tags"]]
    probs = out_of_fold_tag_probs(df, label_names, folds, seed, p.jobs or os.cpu_count() or 1)
    flagged = find_label_issues(given, probs, return_indices_ranked_by="self_confidence")
    rows = [i for i, _ in flagged]
    issues = pd.DataFrame({
        "rank": np.arange(1, len(flagged) + 1),
        "id": df["id"].to_numpy()[rows] if rows else [],
        "raw_row": df["raw_row"].to_numpy()[rows] if rows else [],
        "text": df["text"].to_numpy()[rows] if rows else [],
        "label": [df["tags"][i][j] for i, j in flagged],
        "suggested_label": [label_names[int(probs[i][j].argmax())] for i, j in flagged],
        "label_quality": [round(float(probs[i][j][given[i][j]]), 4) for i, j in flagged],
        "token_index": [j for _, j in flagged],
        "word": [df["tokens"][i][j] for i, j in flagged],
    }, columns=TOKEN_ISSUE_COLUMNS)
    return audit_result(df, rows, issues, p, folds)
