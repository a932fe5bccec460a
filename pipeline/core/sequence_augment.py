"""The sequence task's augmentation: synonym swap (nlpaug + WordNet) and back-translation (Apertium or a Hugging Face
pair) of whole texts, protected tokens masked (the augment stage's docstring says the rules)."""
from __future__ import annotations

import html
import logging
import random
import re
import subprocess
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.core.augmenting import (
    DROP_COLUMNS,
    AugmentResult,
    EmbeddingSimilarity,
    Generator,
    Job,
    Similarity,
    assemble,
    plan,
    row_seed,
    select_classes,
)
from pipeline.core.io import stable_id
from pipeline.core.params import AugmentParams, BackTranslationParams, SynonymParams
from pipeline.core.progress import logged
from pipeline.core.protect import mask, restore

log = logging.getLogger(__name__)


def augment(df: pd.DataFrame, jobs: Sequence[Job], p: AugmentParams, seed: int,
            similarity: Similarity | None = None) -> AugmentResult:
    """Pure core: plan the variants per class, generate them (protected tokens masked), keep those that add
    something and stay close to their source. Every generated variant is either added or dropped with a reason."""
    df = df.reset_index(drop=True)
    if p.max_rows and len(df) > p.max_rows:
        log.info("augment: %d rows > augment.max_rows %d: passing rows through unchanged", len(df), p.max_rows)
        return AugmentResult(df, pd.DataFrame(columns=DROP_COLUMNS), {}, {}, skipped=True)
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
    return assemble(df, cands, generated, planned, p.filter, similarity)



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



def needs_filter(p: AugmentParams) -> bool:
    return p.filter.enabled and (p.synonym.enabled or p.back_translation.enabled)



def augment_texts(df: pd.DataFrame, p: AugmentParams, seed: int) -> AugmentResult:
    """The sequence task's augment: the jobs the params ask for, then augment() with the filter's encoder."""
    jobs = build_jobs(df, p, seed)
    similarity = EmbeddingSimilarity(p.filter) if needs_filter(p) else None
    return augment(df, jobs, p, seed, similarity)
