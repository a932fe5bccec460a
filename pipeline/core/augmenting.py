"""What every task's augmentation shares: the plan of variants per class, the judge of each variant, the stage's
counts, and the sentence-embedding similarity the filter reads (the augment stage's docstring says what they do)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline.core.io import DataError, class_counts, drop_counts, stable_id
from pipeline.core.params import VariantFilterParams
from pipeline.core.text import dedup_key

log = logging.getLogger(__name__)

# A generator maps (texts, ids) to one variant text per input, in order.
Generator = Callable[[list[str], list[str]], list[str]]


@dataclass(frozen=True)
class Job:
    origin: str  # "synonym" | "back_translation"
    variant: int
    classes: frozenset[str]
    generate: Generator


@dataclass
class AugmentResult:
    rows: pd.DataFrame
    dropped: pd.DataFrame  # id, source_id, origin, reason, text, label, similarity
    generated: dict[str, int]
    planned: dict[str, dict[str, int]]  # per class: budget and variants planned
    similarity: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of every scored variant
    skipped: bool = False
    decisions: dict = field(default_factory=dict)  # what an `auto` setting chose, and from what (metrics)


def row_seed(seed: int, *parts: object) -> int:
    return int(stable_id(seed, *parts), 16) % (2**32)


def select_classes(labels: pd.Series, selector: str | list[str], key: str, minority_ratio: float = 0.8
                   ) -> frozenset[str]:
    """`all`, a list, or `minority`: the classes with fewer than minority_ratio x the largest class's rows."""
    counts = labels.value_counts()
    if selector == "all":
        return frozenset(counts.index)
    if selector == "minority":
        return frozenset(counts.index[counts < minority_ratio * counts.max()])
    unknown = sorted(set(selector) - set(counts.index))
    if unknown:
        raise DataError(f"{key}: unknown class(es) {unknown}; the data has {sorted(counts.index)}")
    return frozenset(selector)


def plan(df: pd.DataFrame, jobs: Sequence[Job], max_ratio: float, seed: int) -> tuple[list[list[int]], dict]:
    """Which original rows each job augments, so that no class grows past max_ratio x the largest class.

    A class's budget is `max_ratio * largest - its rows`, lowered so that it never passes a class that was
    larger than it (classes keep their order of size); it is spent one variant per source row per round
    (rows in a seeded order, the method rotating from row to row so both methods get used), so the number of
    variants per row follows from the budget and never exceeds the number of jobs covering the class.
    Returns row positions per job and, per class, the budget and the variants planned.
    """
    counts = df["label"].value_counts()
    cap = math.floor(max_ratio * counts.max())
    originals = df.index[(df["origin"] == "original").to_numpy()]
    assigned: list[list[int]] = [[] for _ in jobs]
    info: dict[str, dict[str, int]] = {}
    final: dict[str, int] = {}
    # Largest class first: a class may not grow past the final size of any class that was larger than it, so
    # augmentation never reorders class sizes (a non-augmented second class caps the third).
    for label in sorted(counts.index, key=lambda c: (-counts[c], str(c))):
        n = int(counts[label])
        ceiling = min([cap] + [final[d] for d in final if counts[d] > n])
        covering = [i for i, job in enumerate(jobs) if label in job.classes]
        pos = [int(i) for i in originals if df.at[i, "label"] == label] if covering else []
        pos.sort(key=lambda i: row_seed(seed, df.at[i, "id"], "plan"))
        budget = max(0, ceiling - n)
        take = min(budget, len(covering) * len(pos))
        for k in range(take):
            r, i = divmod(k, len(pos))
            assigned[covering[(i + r) % len(covering)]].append(pos[i])
        final[label] = n + take
        if covering:
            info[str(label)] = {"budget": budget, "planned": take}
    return [sorted(a) for a in assigned], info


DROP_COLUMNS = ["id", "source_id", "origin", "reason", "text", "label", "similarity"]  # the dropped table's first

# Returns the cosine similarity of each (source, variant) pair.
Similarity = Callable[[list[str], list[str]], np.ndarray]


def judge_variants(cands: list[dict], seen: set[str], f: VariantFilterParams, similarity: Similarity | None) -> None:
    """Set each candidate variant's drop `reason` (None: kept): empty, identical to its source, outside the length
    ratio, less similar to its source than the filter allows, or a duplicate of a text already there (`seen`)."""
    for c in cands:
        if c["reason"]:
            continue
        key, ratio = dedup_key(c["text"]), len(c["text"]) / max(1, len(c["source_text"]))
        if not key:
            c["reason"] = "empty_variant"
        elif key == dedup_key(c["source_text"]):
            c["reason"] = "identical_to_source"
        elif f.enabled and not f.min_length_ratio <= ratio <= f.max_length_ratio:
            c["reason"] = "length_ratio"
    alive = [c for c in cands if not c["reason"]]
    if f.enabled and similarity is not None and alive:
        sims = similarity([c["source_text"] for c in alive], [c["text"] for c in alive])
        for c, s in zip(alive, sims):
            c["similarity"] = round(float(s), 4)
            if s < f.min_similarity:
                c["reason"] = "low_similarity"
    for c in cands:  # after the filter: a drifted variant must not block a later faithful one
        if c["reason"]:
            continue
        key = dedup_key(c["text"])
        if key in seen:
            c["reason"] = "duplicate_of_existing_text"
        else:
            seen.add(key)


def assemble(df: pd.DataFrame, cands: list[dict], generated: dict[str, int], planned: dict, f: VariantFilterParams,
             similarity: Similarity | None) -> AugmentResult:
    """Judge the candidates (judge_variants) and keep them or drop them with their reason: the stage's result.
    A variant inherits every other column of its source (raw_row, kept raw columns): it points at the same raw line
    and belongs to the same slices."""
    judge_variants(cands, set(df["text"].map(dedup_key)), f, similarity)
    new_rows = [{k: c[k] for k in df.columns if k in c} for c in cands if not c["reason"]]
    rows = pd.concat([df, pd.DataFrame(new_rows, columns=df.columns)], ignore_index=True)
    dropped = pd.DataFrame([c for c in cands if c["reason"]], columns=DROP_COLUMNS + [
        c for c in df.columns if c not in DROP_COLUMNS])
    sims = pd.Series([c["similarity"] for c in cands], dtype=float)
    return AugmentResult(rows=rows, dropped=dropped, generated=generated, planned=planned,
                         similarity=sims.dropna().to_numpy())



class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings (sentence-transformers; the bundled MiniLM offline)."""

    def __init__(self, p: VariantFilterParams):
        from pipeline.core.modeling import load_sentence_encoder

        self.p = p
        self.model = load_sentence_encoder(p.model, "augment.filter.model")

    def __call__(self, a: list[str], b: list[str]) -> np.ndarray:
        texts = sorted(set(a) | set(b))
        emb = self.model.encode(texts, batch_size=self.p.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=len(texts) > 2000)
        at = {t: i for i, t in enumerate(texts)}
        return np.einsum("ij,ij->i", emb[[at[t] for t in a]], emb[[at[t] for t in b]])



def stage_metrics(df_in: pd.DataFrame, result: AugmentResult) -> dict:
    added = result.rows["origin"].value_counts()
    sims = result.similarity
    quantiles = {f"p{q}": round(float(np.quantile(sims, q / 100)), 4) for q in (1, 5, 10, 25, 50)} if len(sims) else {}
    return {
        "rows_in": len(df_in),
        "rows_out": len(result.rows),
        "skipped_large_data": result.skipped,
        "generated": dict(sorted(result.generated.items())),
        "added": {o: int(added.get(o, 0)) for o in sorted(result.generated)},
        **drop_counts(result.dropped),
        "per_class_before": class_counts(df_in["label"]),
        "per_class": class_counts(result.rows["label"]),
        "plan": result.planned,
        "similarity": quantiles,
        **({"auto": result.decisions} if result.decisions else {}),
    }
