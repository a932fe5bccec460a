"""The token task's augmentation: variants whose tags are known word by word, so no entity can be lost or moved.

- Mention replacement (Dai and Adel, 2020, "An Analysis of Simple Data Augmentation for Named Entity Recognition"):
  an entity mention becomes another mention of the same type; the new words take `B-T I-T …`. Each mention is
  replaced with probability `augment.mentions.p`, at least one per variant. The mentions come only from the
  sentences the split will train on (core/splitting.py, asked before the split stage runs: the hash split puts a
  sentence by its id, whatever is added around it): augment runs before the split, and a mention drawn from a test
  sentence would teach the model that test entity's words, a leak that scored +0.10 entity F1 on WNUT-16 before it
  was closed. (`rebalance.strategy: undersample` with `split.method: exact` can move sentences between the two
  cuts; with the default hash split nothing moves.)
- Synonym swap on `O` words only: WordNet synonyms (one word, the word's most frequent part of speech in WordNet)
  for alphabetic words of four letters or more, `aug_p` of them (within aug_min..aug_max). Entity words are never
  touched, so the tags are the source's. (textblob's tagger reads a text, not our words, so `pos_tagger` is not
  read here: WordNet's own first sense stands in.)
- Back-translation is refused (TokenTask.check_augment): a translation reorders and merges words, and nothing
  carries the tags over to it.

Variants keep their source's stratum (`label`) and `source_id` (the split keeps them with their source), and are
judged as the sequence task's are (augmenting.judge_variants: empty, identical, duplicate, and the similarity filter
when on). Sentences with no entity are neither planned for nor counted in the class sizes, as rebalance exempts
them. Every draw is seeded from (seed, sentence id, method, variant).
"""
from __future__ import annotations

import dataclasses
import logging
from functools import lru_cache
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.core.augmenting import (
    DROP_COLUMNS,
    AugmentResult,
    EmbeddingSimilarity,
    Job,
    assemble,
    plan,
    row_seed,
    select_classes,
)
from pipeline.core.io import stable_id
from pipeline.core.progress import logged
from pipeline.core.tags import Span, from_spans, spans
from pipeline.core.token_clean import NO_ENTITY

log = logging.getLogger(__name__)

# (words, tags, sentence id) -> one variant's (words, tags)
TokenGenerator = Callable[[list[str], list[str], str], tuple[list[str], list[str]]]


def mention_pool(df: pd.DataFrame) -> dict[str, list[tuple[str, ...]]]:
    """Per entity type, the distinct mentions (as word tuples) of the original sentences, sorted."""
    pool: dict[str, set[tuple[str, ...]]] = {}
    for words, tags in zip(df["tokens"], df["tags"]):
        for s in spans(list(tags)):
            pool.setdefault(s.type, set()).add(tuple(words[s.start:s.end]))
    return {t: sorted(m) for t, m in sorted(pool.items())}


def replace_mentions(words: list[str], tags: list[str], pool: dict[str, list[tuple[str, ...]]], p: float,
                     rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """`words` with some mentions swapped for others of the same type; tags rebuilt from the new spans."""
    found = spans(tags)
    choices = [[m for m in pool.get(s.type, []) if m != tuple(words[s.start:s.end])] for s in found]
    open_ = [i for i, c in enumerate(choices) if c]
    if not open_:
        return list(words), list(tags)
    chosen = {i for i in open_ if rng.random() < p} or {open_[int(rng.integers(len(open_)))]}
    out_words: list[str] = []
    out_spans: list[Span] = []
    at = 0
    for i, s in enumerate(found):
        out_words += words[at:s.start]
        mention = choices[i][int(rng.integers(len(choices[i])))] if i in chosen else tuple(words[s.start:s.end])
        out_spans.append(Span(len(out_words), len(out_words) + len(mention), s.type))
        out_words += mention
        at = s.end
    out_words += words[at:]
    return out_words, from_spans(len(out_words), out_spans)


class MentionReplacer:
    def __init__(self, pool: dict[str, list[tuple[str, ...]]], p: float, seed: int) -> None:
        self.pool, self.p, self.seed = pool, p, seed

    def __call__(self, variant: int) -> TokenGenerator:
        def generate(words: list[str], tags: list[str], sid: str) -> tuple[list[str], list[str]]:
            rng = np.random.default_rng(row_seed(self.seed, sid, "mention", variant))
            return replace_mentions(words, tags, self.pool, self.p, rng)

        return generate


@lru_cache(maxsize=200_000)
def wordnet_synonyms(word: str) -> tuple[str, ...]:
    """One-word WordNet synonyms of `word` in its most frequent part of speech (WordNet lists senses by frequency),
    sorted; empty when WordNet does not know it."""
    from nltk.corpus import wordnet

    senses = wordnet.synsets(word.lower())
    if not senses:
        return ()
    pos = senses[0].pos()
    names = {lemma.name() for s in senses if s.pos() == pos for lemma in s.lemmas()}
    return tuple(sorted(n for n in names if n.isalpha() and n.lower() != word.lower()))


class OutsideSynonyms:
    """Synonym swap of `O` words only (see the module's docstring)."""

    def __init__(self, p, seed: int) -> None:
        from pipeline.core.resources import ensure_wordnet

        ensure_wordnet()
        self.p, self.seed = p, seed

    def __call__(self, variant: int) -> TokenGenerator:
        def generate(words: list[str], tags: list[str], sid: str) -> tuple[list[str], list[str]]:
            rng = np.random.default_rng(row_seed(self.seed, sid, "synonym", variant))
            open_ = [i for i, (w, t) in enumerate(zip(words, tags)) if t == "O" and w.isalpha() and len(w) > 3]
            n = min(max(int(self.p.aug_p * len(open_)), self.p.aug_min), self.p.aug_max)
            out, swapped = list(words), 0
            for i in rng.permutation(open_) if open_ else []:
                if swapped == n:
                    break
                options = wordnet_synonyms(words[i])
                if options:
                    new = options[int(rng.integers(len(options)))]
                    out[i] = new.capitalize() if words[i][0].isupper() else new
                    swapped += 1
            return out, list(tags)

        return generate


def training_sentences(df: pd.DataFrame, split_params, seed: int) -> pd.DataFrame:
    """The original sentences the split stage will put in train (the same function, on the same groups)."""
    from pipeline.core.splitting import split

    return split(df[df["origin"] == "original"], split_params, seed).splits["train"]


# `augment.mentions.enabled: auto` is on where at least this share of the words is `O`. Entity spans among untagged
# words (NER: 0.95 on the WNUT-16 tweets) gain from a swapped mention; where nearly every word is tagged (parts of
# speech: 0.00 on the Turkish treebanks) a "mention" is one word and a swap is grammatical noise (docs/ner.md). Any
# value between the two separates them; a half says "entities are the exception", set by reason, not tuned.
AUTO_MIN_OUTSIDE_SHARE = 0.5


def outside_share(df: pd.DataFrame) -> float:
    """The share of the original sentences' words tagged `O`."""
    tags = df.loc[df["origin"] == "original", "tags"]
    words = sum(len(t) for t in tags)
    return sum(sum(x == "O" for x in t) for t in tags) / max(1, words)


def mentions_decision(df: pd.DataFrame, enabled: bool | str) -> dict:
    """Whether mention replacement runs, and why: the setting, or `auto`'s reading of the data."""
    if enabled != "auto":
        return {"enabled": bool(enabled), "setting": enabled}
    share = round(outside_share(df), 4)
    on = share >= AUTO_MIN_OUTSIDE_SHARE
    log.info("augment.mentions.enabled auto: %.1f%% of the words are O (entity spans %s) -> mention replacement %s",
             100 * share, "among untagged words" if on else "cover most words", "on" if on else "off")
    return {"enabled": on, "setting": "auto", "outside_share": share, "min_outside_share": AUTO_MIN_OUTSIDE_SHARE}


def build_token_jobs(df: pd.DataFrame, p, seed: int, split_params, mentions: dict) -> list[Job]:
    """The jobs the params ask for, each covering the strata `classes` selects among sentences with an entity."""
    labels = df["label"][df["label"] != NO_ENTITY]
    jobs: list[Job] = []
    if mentions["enabled"]:
        pool = mention_pool(training_sentences(df, split_params, seed))
        replacer = MentionReplacer(pool, p.mentions.p, seed)
        classes = select_classes(labels, p.mentions.classes, "augment.mentions.classes", p.minority_ratio)
        jobs += [Job("mention_replacement", k, classes, replacer(k)) for k in range(p.mentions.variants)]
    if p.synonym.enabled:
        swapper = OutsideSynonyms(p.synonym, seed)
        classes = select_classes(labels, p.synonym.classes, "augment.synonym.classes", p.minority_ratio)
        jobs += [Job("synonym", k, classes, swapper(k)) for k in range(p.synonym.variants)]
    return jobs


def augment_tokens(df: pd.DataFrame, p, seed: int, split_params) -> AugmentResult:
    """Pure core, as the sequence task's augment(): plan per stratum, generate, judge; every variant is added or
    dropped with a reason."""
    df = df.reset_index(drop=True)
    if p.max_rows and len(df) > p.max_rows:
        log.info("augment: %d sentences > augment.max_rows %d: passing them through unchanged", len(df), p.max_rows)
        return AugmentResult(df, pd.DataFrame(columns=DROP_COLUMNS), {}, {}, skipped=True)
    mentions = mentions_decision(df, p.mentions.enabled)
    jobs = build_token_jobs(df, p, seed, split_params, mentions)
    assigned, planned = plan(df[df["label"] != NO_ENTITY], jobs, p.max_ratio, seed) if jobs else ([], {})
    cands, generated = [], {}
    for job, rows in zip(jobs, assigned):
        for i in logged(rows, f"{job.origin} v{job.variant}", unit="sentences"):
            row = df.loc[i]
            words, tags = job.generate(list(row["tokens"]), list(row["tags"]), row["id"])
            cands.append({**row.to_dict(), "id": stable_id(row["id"], job.origin, job.variant),
                          "origin": job.origin, "tokens": words, "tags": tags, "text": " ".join(words),
                          "source_text": row["text"], "reason": None, "similarity": np.nan})
        generated[job.origin] = generated.get(job.origin, 0) + len(rows)
    similarity = EmbeddingSimilarity(p.filter) if p.filter.enabled and cands else None
    result = assemble(df, cands, generated, planned, p.filter, similarity)
    return dataclasses.replace(result, decisions={"mentions": mentions})
