"""How the default `augment.filter.min_similarity` was chosen: variant-vs-source similarity next to a null.

    python -m bench.similarity                    # the bundled SMS data and the 3,000-row tweet sample

For each dataset: generate the default variants with the filter off, score each against its source (cosine of
the bundled sentence encoder), and score random pairs of *different* texts of the same class — what a variant
that kept nothing of its source but the topic would score. Prints quantiles of both and sample variants per
similarity band, to read. Writes bench/results/similarity.json.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.ablation import tweets_raw
from bench.common import ROOT
from pipeline.core.io import read_raw_table
from pipeline.core.params import (
    load_params,
    replace,
)
from pipeline.stages.augment import EmbeddingSimilarity, augment, build_jobs
from pipeline.stages.clean import clean

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5)
NULL_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def measure(name: str, raw: pd.DataFrame, clean_params, augment_params, sim: EmbeddingSimilarity, seed: int) -> dict:
    kept = clean(raw, clean_params, name).kept
    r = augment(kept, build_jobs(kept, augment_params, seed), augment_params, seed, sim)
    new = r.rows[r.rows["origin"] != "original"].copy()
    new["source_text"] = new["source_id"].map(kept.set_index("id")["text"])
    new["sim"] = sim(new["source_text"].tolist(), new["text"].tolist())
    a = kept.sample(3000, replace=True, random_state=1)
    b = kept.sample(3000, replace=True, random_state=2)
    m = (a["label"].to_numpy() == b["label"].to_numpy()) & (a["text"].to_numpy() != b["text"].to_numpy())
    null = sim(a["text"].to_numpy()[m].tolist(), b["text"].to_numpy()[m].tolist())
    out = {"variants": {o: dict(zip(map(str, QUANTILES), np.quantile(g["sim"], QUANTILES).round(3).tolist()))
                        for o, g in new.groupby("origin")},
           "null_same_class_pairs": dict(zip(map(str, NULL_QUANTILES),
                                             np.quantile(null, NULL_QUANTILES).round(3).tolist())),
           "share_below": {str(t): {o: round(float((g["sim"] < t).mean()), 3) for o, g in new.groupby("origin")}
                           for t in (0.6, 0.7, 0.8)}}
    print(f"== {name}: {json.dumps(out, indent=1)}")
    for lo, hi in ((0.0, 0.6), (0.6, 0.7), (0.7, 0.8)):
        band = new[(new["sim"] >= lo) & (new["sim"] < hi)]
        print(f"-- similarity {lo}-{hi}: {len(band)} variants")
        for _, x in band.head(5).iterrows():
            print(f"   {x['sim']:.2f} {x['origin'][:5]} | {x['source_text'][:100]}\n              -> {x['text'][:100]}")
    return out


def main() -> None:
    p = load_params(ROOT / "params.yaml")
    aug = replace(p.augment, filter=replace(p.augment.filter, min_similarity=0.0))
    sim = EmbeddingSimilarity(aug.filter)
    raw, name = read_raw_table(str(ROOT / "data" / "raw" / "sms-spam.csv"))
    results = {"sms": measure(name, raw, p.clean, aug, sim, p.seed)}
    tweets = pd.read_csv(tweets_raw(ROOT / "bench" / "work" / "ablation", 3000), dtype=str, keep_default_na=False)
    tclean = replace(p.clean, text_column="text", label_column="sentiment", label_names={})
    results["tweets3000"] = measure("tweets", tweets, tclean, aug, sim, p.seed)
    (ROOT / "bench" / "results" / "similarity.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
