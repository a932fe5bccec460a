"""augment: data/interim/audited.parquet -> data/interim/augmented.parquet (params: seed, augment).

Adds synonym-swap (nlpaug + WordNet, offline) and back-translation (Apertium offline, or any Hugging Face
translation pair) variants of original rows, balance-aware: only classes below `minority_ratio` of the largest
are "minority", and a class gets variants only until it reaches `max_ratio` of the largest (plan()). URLs,
e-mails, handles, hashtags, numbers and amounts are masked before a method runs and restored after it
(pipeline/core/protect.py). A variant keeps its source's `source_id`, so the split stage keeps it in the same split
as its source. A variant that lost a protected token, is empty, identical to its source, out of the length-ratio
bounds, too dissimilar to its source (sentence-embedding cosine) or a duplicate of a text already present is
dropped and counted with that reason.

Each variant is seeded from (seed, row id, method, variant number), not from its position in a batch, so the
output does not depend on batch size or row order.
"""
from __future__ import annotations

import html
import logging
import math
import random
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline.core.io import (
    DataError,
    class_counts,
    drop_counts,
    read_table,
    run_stage,
    setup_logging,
    stable_id,
    stage_args,
    write_json,
    write_table,
)
from pipeline.core.params import (
    AugmentParams,
    BackTranslationParams,
    SynonymParams,
    VariantFilterParams,
    load_params,
)
from pipeline.core.progress import logged
from pipeline.core.protect import mask, restore
from pipeline.core.tasks import task_for
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


def augment(df: pd.DataFrame, jobs: Sequence[Job], p: AugmentParams, seed: int,
            similarity: Similarity | None = None) -> AugmentResult:
    """Pure core: plan the variants per class, generate them (protected tokens masked), keep those that add
    something and stay close to their source. Every generated variant is either added or dropped with a reason."""
    df = df.reset_index(drop=True)
    drop_cols = ["id", "source_id", "origin", "reason", "text", "label", "similarity"]
    if p.max_rows and len(df) > p.max_rows:
        log.info("augment: %d rows > augment.max_rows %d: passing rows through unchanged", len(df), p.max_rows)
        return AugmentResult(df, pd.DataFrame(columns=drop_cols), {}, {}, skipped=True)
    assigned, planned = plan(df, jobs, p.max_ratio, seed)
    cands, generated = [], {}
    for job, rows in zip(jobs, assigned):
        if not rows:
            continue
        src = df.loc[rows]
        masked = [mask(t) if p.protect_tokens else (t, []) for t in src["text"]]
        out = job.generate([m for m, _ in masked], src["id"].tolist())
        if len(out) != len(src):
            raise RuntimeError(f"{job.origin}: generator returned {len(out)} texts for {len(src)} inputs")
        generated[job.origin] = generated.get(job.origin, 0) + len(out)
        for (_, row), (_, tokens), text in zip(src.iterrows(), masked, out):
            text = re.sub(r"\s+", " ", text or "").strip()
            restored = restore(text, tokens) if p.protect_tokens else text
            # A variant inherits every other column of its source (raw_row, kept raw columns): it points at the
            # same raw line and belongs to the same slices.
            cands.append({**row.to_dict(), "id": stable_id(row["id"], job.origin, job.variant),
                          "source_id": row["source_id"], "origin": job.origin,
                          "text": text if restored is None else restored, "source_text": row["text"],
                          "reason": "protected_token_lost" if restored is None else None, "similarity": np.nan})
    judge_variants(cands, set(df["text"].map(dedup_key)), p.filter, similarity)
    new_rows = [{k: c[k] for k in df.columns if k in c} for c in cands if not c["reason"]]
    rows = pd.concat([df, pd.DataFrame(new_rows, columns=df.columns)], ignore_index=True)
    dropped = pd.DataFrame([c for c in cands if c["reason"]], columns=drop_cols + [
        c for c in df.columns if c not in drop_cols])
    sims = pd.Series([c["similarity"] for c in cands], dtype=float)
    return AugmentResult(rows=rows, dropped=dropped, generated=generated, planned=planned,
                         similarity=sims.dropna().to_numpy())


# ---------------------------------------------------------------------------------------------- synonym swap
TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]+|\s+")
# Swap only real words: SMS slang such as "u" or "ur" has absurd WordNet senses ("u" -> "uranium").
# nlpaug also tries the regex on " token ", so it must not match a padded long word.
SKIP_TOKEN = r"^(?:[A-Za-z]{1,3}|\S*[^A-Za-z\s]\S*|\s+)$"


class SynonymSwapper:
    """nlpaug's WordNet SynonymAug, made offline, punctuation-preserving and seeded per row.

    nlpaug's own POS path calls nltk.pos_tag, whose model cannot be had offline; textblob's bundled
    PatternTagger replaces it. Its tokenizer splits "T&C's" into "T & C ' s" for good; ours keeps every
    character (whitespace included) as a token so joining them restores the text.
    """

    def __init__(self, p: SynonymParams, seed: int):
        from pipeline.core.resources import ensure_wordnet

        ensure_wordnet()
        import nlpaug.augmenter.word as naw

        self.p, self.seed = p, seed
        self.aug = naw.SynonymAug(
            aug_src="wordnet", aug_p=p.aug_p, aug_min=p.aug_min, aug_max=p.aug_max,
            tokenizer=TOKEN.findall, reverse_tokenizer="".join, stopwords_regex=SKIP_TOKEN,
        )
        self.aug.model.pos_tag = self._pos_tag
        # WordNet look-ups dominate; the same words recur across texts, so cache them per (word, pos).
        self.aug.model.predict = lru_cache(maxsize=200_000)(self.aug.model.predict)

    def _pos_tag(self, tokens: list[str]) -> list[tuple[str, str]]:
        if self.p.pos_tagger == "none":
            return [(t, "") for t in tokens]
        from textblob.en import tag

        words = [i for i, t in enumerate(tokens) if t.strip() and t[0].isalnum()]
        tags = tag(" ".join(tokens[i] for i in words), tokenize=False) if words else []
        out = [(t, "SYM") for t in tokens]
        for i, (_, pos) in zip(words, tags):
            # nlpaug skips only "DT" tokens; proper nouns ("May", "FA Cup") have no sensible synonyms either.
            out[i] = (tokens[i], "DT" if pos.startswith("NNP") else pos)
        return out

    def __call__(self, variant: int) -> Generator:
        def generate(texts: list[str], ids: list[str]) -> list[str]:
            out = []
            for text, rid in logged(list(zip(texts, ids)), f"synonym swap v{variant}", unit="rows"):
                s = row_seed(self.seed, rid, "synonym", variant)
                random.seed(s)  # nlpaug draws from the global `random` and `numpy.random` generators
                np.random.seed(s)
                out.append(self.aug.augment(text)[0])
            return out

        return generate


# ---------------------------------------------------------------------------------------------- back-translation
class ApertiumTranslator:
    """Batched Apertium: one process per batch and direction.

    Records are sent as HTML separated by <hr>: Apertium passes tags through untouched as "superblanks", so the
    output splits back into exactly one record per input, which plain line mode does not guarantee.
    """

    def __init__(self, batch_size: int = 1000):
        self.batch_size = batch_size

    def _call(self, pair: str, texts: list[str]) -> list[str]:
        payload = "<hr>".join(html.escape(t, quote=False) for t in texts)
        proc = subprocess.run(["apertium", "-u", "-f", "html", pair], input=payload.encode("utf-8"),
                              capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"apertium {pair} failed: {proc.stderr.decode(errors='replace')[:500]}")
        parts = proc.stdout.decode("utf-8", errors="replace").split("<hr>")
        if len(parts) != len(texts):
            if len(texts) == 1:
                return [html.unescape(" ".join(parts)).strip()]
            mid = len(texts) // 2  # misaligned: translate the halves separately to isolate the record
            return self._call(pair, texts[:mid]) + self._call(pair, texts[mid:])
        return [html.unescape(x).strip() for x in parts]

    def translate(self, pair: str, texts: list[str]) -> list[str]:
        out: list[str] = []
        starts = range(0, len(texts), self.batch_size)
        for i in logged(starts, f"apertium {pair}", unit="rows",
                        weights=[min(self.batch_size, len(texts) - i) for i in starts]):
            out += self._call(pair, texts[i:i + self.batch_size])
        return out

    def back_translate(self, source: str, pivot: str) -> Generator:
        def generate(texts: list[str], ids: list[str]) -> list[str]:
            return self.translate(f"{pivot}-{source}", self.translate(f"{source}-{pivot}", texts))

        return generate


class HFTranslator:
    """Any pair of Hugging Face seq2seq translation models (e.g. opus-mt en->es, es->en), batched, on GPU if any."""

    def __init__(self, p: BackTranslationParams, seed: int):
        import torch

        from pipeline.core.modeling import load_seq2seq, load_tokenizer, pick_device

        self.p, self.seed = p, seed
        self.device = pick_device(p.device)
        self.models = []
        for key, name in (("hf_forward_model", p.hf_forward_model), ("hf_backward_model", p.hf_backward_model)):
            full_key = f"augment.back_translation.{key}"
            tok = load_tokenizer(name, full_key)
            model = load_seq2seq(name, full_key).to(self.device).eval()
            if self.device == "cuda":
                model = model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
            self.models.append((tok, model))

    def translate(self, which: int, texts: list[str], sample_seed: int | None) -> list[str]:
        import torch

        tok, model = self.models[which]
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
        out: list[str] = [""] * len(texts)
        if sample_seed is not None:
            torch.manual_seed(sample_seed)
        bs = self.p.batch_size
        starts = range(0, len(texts), bs)
        for start in logged(starts, f"translate {which}", unit="rows",
                            weights=[min(bs, len(texts) - i) for i in starts]):
            idx = order[start:start + bs]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                      max_length=self.p.max_length).to(self.device)
            # Only what every seq2seq model takes: some tokenizers also emit token_type_ids, which generate() rejects.
            enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=self.p.max_length, num_beams=1,
                                     do_sample=sample_seed is not None, temperature=self.p.temperature)
            for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
                out[i] = text
        return out

    def __call__(self, variant: int) -> Generator:
        # One variant: greedy (deterministic). Several: sampling, each variant with its own seed.
        sample = self.p.variants > 1

        def generate(texts: list[str], ids: list[str]) -> list[str]:
            s = row_seed(self.seed, "hf", variant) if sample else None
            return self.translate(1, self.translate(0, texts, s), s)

        return generate


# ---------------------------------------------------------------------------------------------- wiring
def build_jobs(df: pd.DataFrame, p: AugmentParams, seed: int) -> list[Job]:
    """Check resources and build the generators (loads WordNet / models) before any row is processed."""
    jobs: list[Job] = []
    syn, bt = p.synonym, p.back_translation
    if syn.enabled:
        classes = select_classes(df["label"], syn.classes, "augment.synonym.classes", p.minority_ratio)
        swapper = SynonymSwapper(syn, seed)
        jobs += [Job("synonym", k, classes, swapper(k)) for k in range(syn.variants)]
    if bt.enabled:
        classes = select_classes(df["label"], bt.classes, "augment.back_translation.classes", p.minority_ratio)
        if bt.backend == "apertium":
            from pipeline.core.resources import ensure_apertium

            ensure_apertium(bt.source_lang, bt.pivots[: bt.variants])
            tr = ApertiumTranslator()
            jobs += [Job("back_translation", k, classes, tr.back_translate(bt.source_lang, pivot))
                     for k, pivot in enumerate(bt.pivots[: bt.variants])]
        else:
            hf = HFTranslator(bt, seed)
            jobs += [Job("back_translation", k, classes, hf(k)) for k in range(bt.variants)]
    return jobs


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


def needs_filter(p: AugmentParams) -> bool:
    return p.filter.enabled and (p.synonym.enabled or p.back_translation.enabled)


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
    }


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "dropped", "metrics")
    params = load_params(args.params)
    p = params.augment
    df = read_table(args.input)
    task_for(params).check_augment(p)
    jobs = build_jobs(df, p, params.seed)
    similarity = EmbeddingSimilarity(p.filter) if needs_filter(p) else None
    result = augment(df, jobs, p, params.seed, similarity)
    metrics = stage_metrics(df, result)
    write_table(result.rows, args.output)
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("per class %s -> %s; added %s; dropped %s; similarity quantiles %s", metrics["per_class_before"],
             metrics["per_class"], metrics["added"], metrics["dropped"], metrics["similarity"])


if __name__ == "__main__":
    run_stage(main)
