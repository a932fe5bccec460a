"""The checks `monitor` runs over a window of traffic against the model's test rows, and the rows of that window
most worth a label. Pure functions of their inputs (a model, two frames, a seed): the command reads the files,
writes the report and decides the exit status.
"""
from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import pipeline.core.drift as drift
from pipeline.core.io import DataError
from pipeline.core.predlog import text_sha256 as sha

MIN_ROWS = 20  # fewer rows than this and no two-sample test says anything useful


@functools.lru_cache(maxsize=2)
def _encoder(folder: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(folder)
    was = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the classifier head's weights are "unexpected" for the bare encoder: fine
    try:
        return tok, AutoModel.from_pretrained(folder).eval()
    finally:
        hf_logging.set_verbosity(was)


def embed(folder: Path, texts: list[str], batch_size: int = 32, max_length: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states of the model's encoder (the body the classifier head sits on)."""
    import torch

    tok, enc_model = _encoder(str(folder))
    out = []
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = enc_model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
    emb = np.zeros((len(texts), out[0].shape[1]), dtype=np.float32) if out else np.zeros((0, 1), np.float32)
    if out:
        emb[order] = np.vstack(out)
    return emb


def token_ids(tok: Any, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if texts else []


def token_counts(tok: Any, texts: list[str], chunk: int = 10_000) -> Counter:
    counts: Counter = Counter()
    for s in range(0, len(texts), chunk):
        for ids in token_ids(tok, texts[s:s + chunk]):
            counts.update(ids)
    return counts


def memoised(cache: dict, texts: list[str], fn: Any) -> list:
    """fn(texts) per text, computing only the texts not already in `cache`."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        cache.update(zip(todo, fn(todo)))
    return [cache[t] for t in texts]


def sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return df if len(df) <= n else df.iloc[np.sort(rng.choice(len(df), n, replace=False))].reset_index(drop=True)


def scorable(scorer: Any, reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                         dict, bool]:
    """(current rows the model can score, normalised; reference rows not replayed in them; the counts of what was
    set aside; whether the window has text)."""
    counts = {"current_rows": len(current), "reference_rows": len(reference)}
    if "status" in current:
        counts["current_not_scored"] = {str(k): int(v) for k, v in current.loc[current["status"] != "ok", "status"]
                                        .value_counts().items()}
        current = current[current["status"] == "ok"].reset_index(drop=True)
    # A log written with --no-log-text has no text at all; a file may have a few empty cells (scored as empty).
    has_text = "text" in current and bool(current["text"].notna().any())
    if has_text:
        norm, status = scorer.normalise(current["text"].tolist())
        current = current.assign(text=norm)[np.asarray(status) == "ok"].reset_index(drop=True)
        # A replay of reference rows is compared with the other reference rows: two samples, no row in both.
        overlap = set(map(sha, current["text"])) & set(map(sha, reference["text"]))
        if overlap:
            reference = reference[~reference["text"].map(sha).isin(overlap)].reset_index(drop=True)
        counts["reference_rows_also_in_current"] = len(overlap)
    if len(current) < MIN_ROWS or len(reference) < MIN_ROWS:
        raise DataError(f"too few rows to test: {len(current)} current and {len(reference)} reference rows that "
                        f"can be scored (at least {MIN_ROWS} each)")
    return current, reference, counts, has_text


def text_checks(scorer: Any, ref: pd.DataFrame, cur: pd.DataFrame, train_texts: list[str] | None,
                embedder: Path | None, alpha: float, rng: np.random.Generator, embed_rows: int, memo: dict
                ) -> list[drift.Check]:
    """Input drift of a window with text: rare tokens under the model's tokenizer, script mix, embeddings."""
    tok = scorer.tokenizer
    checks = []
    if tok is None or not train_texts:
        checks.append(drift.skipped("rare_tokens", "Kolmogorov-Smirnov",
                                    "no tokenizer (baseline model) or no training rows"))
    else:
        if "train_counts" not in memo:
            memo["train_counts"] = token_counts(tok, train_texts)
        special = set(tok.all_special_ids)
        share = [drift.rare_token_share(token_ids(tok, t), memo["train_counts"], special)
                 for t in (ref["text"].tolist(), cur["text"].tolist())]
        checks.append(drift.ks_check("rare_tokens", share[0], share[1], "share"))
    checks.append(drift.chi2_check("script_mix", [drift.script_of(t) for t in ref["text"]],
                                   [drift.script_of(t) for t in cur["text"]]))
    if embedder is None:
        checks.append(drift.skipped("embedding", "MMD", "no transformers encoder for this model: pass --embedder"))
        return checks
    e_ref, e_cur = sample(ref, embed_rows, rng), sample(cur, embed_rows, rng)
    emb = memoised(memo.setdefault("embedding", {}), e_ref["text"].tolist() + e_cur["text"].tolist(),
                   lambda texts: list(embed(embedder, texts)))
    emb = np.vstack(emb) if emb else np.zeros((0, 1))
    # Bonferroni over the six checks: the permutation p-value must be able to go below alpha / 6.
    checks.append(drift.mmd_check("embedding", emb[:len(e_ref)], emb[len(e_ref):], rng,
                                  drift.permutations_for(alpha / 6)))
    return checks


def predictions(scorer: Any, ref: pd.DataFrame, cur: pd.DataFrame, has_text: bool, memo: dict
                ) -> tuple[list, np.ndarray, list, np.ndarray]:
    """(predictions, confidences) of the model on the reference rows and on the window (the log's own where it has
    them: what was served), as the prediction log writes them (the scorer's `log_fields`); a confidence is NaN where
    a text has none (a token model's text without entities)."""
    def read(scored: list[dict]) -> tuple[list, np.ndarray]:
        fields = [scorer.log_fields(r) for r in scored]
        return [f["prediction"] for f in fields], np.array([np.nan if f.get("confidence") is None
                                                            else f["confidence"] for f in fields], dtype=float)

    ref_pred, ref_conf = read(memoised(memo.setdefault("scores", {}), ref["text"].tolist(), scorer.score))
    if "prediction" in cur and "confidence" in cur and cur["prediction"].notna().all():
        return ref_pred, ref_conf, cur["prediction"].tolist(), cur["confidence"].to_numpy(dtype=float)
    if has_text:
        return (ref_pred, ref_conf, *read(scorer.score(cur["text"].tolist())))
    raise DataError("the window has neither text nor predictions: nothing to test")


def run_checks(scorer: Any, reference: pd.DataFrame, current: pd.DataFrame, train_texts: list[str] | None,
               embedder: Path | None, alpha: float, max_rows: int, seed: int, embed_rows: int = 1000,
               memo: dict | None = None) -> dict:
    """The checks of a current window against reference rows (both with `text`; current may instead have only
    `text_chars`, and may carry `prediction`/`confidence` from a log). `memo`: a dict kept between calls with the
    same model, reference and training rows (repeated windows) to reuse their embeddings and scores."""
    memo = {} if memo is None else memo
    rng = np.random.default_rng(seed)
    current, reference, counts, has_text = scorable(scorer, reference, current)
    cur, ref = sample(current, max_rows, rng), sample(reference, max_rows, rng)
    counts.update({"current_rows_tested": len(cur), "reference_rows_tested": len(ref)})
    ref_len = ref["text"].str.len().to_numpy()
    cur_len = cur["text"].str.len().to_numpy() if has_text else cur["text_chars"].to_numpy(dtype=float)
    checks = [drift.ks_check("text_length", ref_len, cur_len, "chars")]
    if has_text:
        checks += text_checks(scorer, ref, cur, train_texts, embedder, alpha, rng, embed_rows, memo)
    else:
        why = "the window has no text (logged with --no-log-text)"
        checks += [drift.skipped("rare_tokens", "Kolmogorov-Smirnov", why),
                   drift.skipped("script_mix", "chi-square", why), drift.skipped("embedding", "MMD", why)]
    ref_pred, ref_conf, cur_pred, cur_conf = predictions(scorer, ref, cur, has_text, memo)
    # the mix of what was predicted: a class per text, or a token model's entity types (scorer.categories)
    ref_pred = [c for p in ref_pred for c in scorer.categories(p)]
    cur_pred = [c for p in cur_pred for c in scorer.categories(p)]
    checks.append(drift.chi2_check("predicted_class_mix", ref_pred, cur_pred))
    ref_conf, cur_conf = ref_conf[~np.isnan(ref_conf)], cur_conf[~np.isnan(cur_conf)]
    conf = drift.ks_check("confidence", ref_conf, cur_conf, "confidence")
    conf.effect["psi"] = round(drift.psi(ref_conf, cur_conf), 4)
    checks.append(conf)
    summary = drift.verdict(checks, alpha)
    return {**summary, "counts": counts, "checks": [c.as_dict() for c in checks],
            "plots": {"text_length": [ref_len.tolist(), np.asarray(cur_len).tolist()],
                      "confidence": [ref_conf.tolist(), cur_conf.tolist()],
                      "predicted_class_mix": [Counter(ref_pred), Counter(cur_pred)]}}


LABEL_COLUMNS = ["rank", "reason", "score", "text", "prediction", "confidence", "teacher_prediction", "request_id",
                 "time", "model_md5", "label"]


def label_candidates(scorer: Any, current: pd.DataFrame, train_texts: list[str], max_candidates: int, seed: int
                     ) -> pd.DataFrame:
    """The window's rows a person could label: scorable, each normalised text once, none already trained on, at
    most `max_candidates` (a seeded sample)."""
    if "text" not in current or current["text"].isna().all():
        raise DataError("--to-label: the window has no text (logged with --no-log-text): nothing a person can label")
    norm, status = scorer.normalise(current["text"].tolist())
    cand = current.assign(text=norm)[np.asarray(status) == "ok"]
    cand = cand.drop_duplicates("text")
    known = set(map(sha, train_texts))
    cand = cand[~cand["text"].map(sha).isin(known)].reset_index(drop=True)
    if len(cand) > max_candidates:
        cand = cand.iloc[np.sort(np.random.default_rng(seed).choice(len(cand), max_candidates, replace=False))]
        cand = cand.reset_index(drop=True)
    return cand


def take_in_turn(rankings: list[tuple[str, np.ndarray]], n: int) -> list[tuple[int, str, float]]:
    """(row, ranking, score) of up to `n` rows, taken from each ranking in turn (highest score first), each row
    once."""
    size = len(rankings[0][1]) if rankings else 0
    chosen: list[tuple[int, str, float]] = []
    taken: set[int] = set()
    orders = [(name, np.argsort(-score, kind="stable"), score) for name, score in rankings]
    pos = [0] * len(orders)
    while len(chosen) < min(n, size):
        for j, (name, order, score) in enumerate(orders):
            while pos[j] < len(order) and int(order[pos[j]]) in taken:
                pos[j] += 1
            if pos[j] < len(order) and len(chosen) < n:
                i = int(order[pos[j]])
                taken.add(i)
                chosen.append((i, name, float(score[i])))
    return chosen


def rows_to_label(scorer: Any, current: pd.DataFrame, train_texts: list[str], reference_texts: list[str],
                  embedder: Path | None, teacher: Any, n: int, max_candidates: int, seed: int) -> pd.DataFrame:
    """The `n` window rows most worth a label, taken in turn from three rankings, each row once:

    - least_confident: the served model's lowest top-class probability (a token model: its weakest word's tag
      probability);
    - teacher_disagrees: the largest total-variation distance between the teacher's and the served model's
      probabilities (a token model: the share of words the two tag differently), when a teacher is given;
    - novel: the farthest (cosine) from every reference row in the model's embedding space, where drift lives.

    Rows whose normalised text is in the training rows, or already chosen, are skipped. `label` is left empty for
    a person to fill (a token model's `prediction` holds its entity spans as JSON, to correct); `finetune ingest`
    reads a text classifier's file back."""
    cand = label_candidates(scorer, current, train_texts, max_candidates, seed)
    if cand.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    texts = cand["text"].tolist()
    cols, rankings = scorer.label_rankings(texts, teacher)
    cand = cand.assign(**cols)
    if embedder is not None and reference_texts:
        emb = embed(embedder, texts + reference_texts)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        nearest = np.max(emb[:len(texts)] @ emb[len(texts):].T, axis=1)
        rankings.append(("novel", 1.0 - nearest))
    chosen = take_in_turn(rankings, n)
    out = cand.iloc[[i for i, _, _ in chosen]].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    out["reason"] = [r for _, r, _ in chosen]
    out["score"] = np.round([s for _, _, s in chosen], 4)
    out["confidence"] = out["confidence"].round(4)
    out["label"] = ""
    for col in ("request_id", "time", "model_md5"):
        if col not in out:
            out[col] = None
    return out[LABEL_COLUMNS]
