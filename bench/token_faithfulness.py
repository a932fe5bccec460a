"""How faithful the per-entity attributions of token models are: ERASER's removal metrics, per entity.

    python -m bench.token_faithfulness wnut16 turkish-wiki [--sentences 200] [--entities 300]
    (after `python -m bench.ner_repro <dataset>`, whose trained projects it explains)

For each packaged model of a token project (teacher, torch student, int8 ONNX student, CRF) and each method it can
run (occlusion, integrated gradients for torch models, random: pipeline/core/token_attribution.py), on up to
`--sentences` test sentences (a seeded sample): every entity the model tags is explained; the cost per sentence on
this machine; and, on up to `--entities` of those entities (seeded), comprehensiveness (the entity's top-k% words
masked) and sufficiency (all but them masked), AOPC over ERASER's 1/5/10/20/50% bins, each method paired per entity
against random and against occlusion, with a 95% bootstrap CI over entities; `auto` for token models follows this
table. Also how often the int8 student and the torch student name the same strongest word for the entities both
tag. Writes bench/results/token_faithfulness.json and TOKEN_FAITHFULNESS.md, with the machine and date.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from bench.common import OUT, ROOT, measured, record
from bench.faithfulness import fmt

BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
MODELS = ("teacher", "student", "student-onnx", "baseline")


def explained(model, sentences: list[list[str]], method: str) -> tuple[list[list], float]:
    from pipeline.core.token_attribution import explain_sentences
    from pipeline.core.token_io import joined

    texts, offsets = zip(*[joined(s) for s in sentences])
    t0 = time.perf_counter()
    found = explain_sentences(model, list(texts), sentences, list(offsets), method)
    return found, (time.perf_counter() - t0) / len(sentences)


def agreement(a: list[list], b: list[list]) -> dict:
    """For entities both models tag (same words, same type): the same strongest word, and top-3 overlap."""
    same, overlap = [], []
    for ra, rb in zip(a, b):
        other = {(e.at, e.target): e for e in rb}
        for e in ra:
            f = other.get((e.at, e.target))
            if f is not None:
                same.append(e.ranking()[0] == f.ranking()[0])
                overlap.append(len(set(e.ranking()[:3]) & set(f.ranking()[:3])) / min(3, len(e.words)))
    return {"entities": len(same), "same_top_word": float(np.mean(same)) if same else None,
            "top3_overlap": float(np.mean(overlap)) if overlap else None}


def dataset(name: str, sentences: int, entities: int, seed: int) -> dict:
    from pipeline.core.attribution import available
    from pipeline.core.faithfulness import entity_removal_scores as removal_scores
    from pipeline.core.faithfulness import paired
    from pipeline.core.io import read_table
    from pipeline.core.token_scoring import open_tagger

    repo = ROOT / "bench" / "work" / "ner_repro" / name
    if not (repo / "models" / "student-onnx" / "lineage.json").is_file():
        raise SystemExit(f"{repo}: no trained project; run `python -m bench.ner_repro {name}` first")
    test = read_table(repo / "data" / "processed" / "test.parquet")
    test = test.sample(n=min(sentences, len(test)), random_state=seed) if len(test) > sentences else test
    words = [list(t) for t in test["tokens"]]
    out: dict = {"sentences": len(words), "project": str(repo.relative_to(ROOT)), "models": {}}
    kept = {}
    for label in MODELS:
        model = open_tagger(repo / "models" / label)
        res: dict = {}
        for method in available(model):
            found, cost = explained(model, words, method)
            kept[(label, method)] = found
            flat = [e for row in found for e in row]
            # one seeded sample per model: every method reads the same model's entities, so the same ones are scored
            pick = np.sort(np.random.default_rng(seed).permutation(len(flat))[:entities]) if len(flat) > entities \
                else np.arange(len(flat))
            scores = removal_scores(model, [flat[i] for i in pick], BINS)
            res[method] = {"seconds_per_sentence": cost, "entities": len(flat), "scored": int(len(pick)),
                           **{k: float(v.mean()) for k, v in scores.items()}, "_scores": scores, "_pick": pick}
        for method, r in res.items():
            for ref in ("random", "occlusion"):
                if ref in res and ref != method and method != "random" and np.array_equal(r["_pick"],
                                                                                      res[ref]["_pick"]):
                    a, b = r["_scores"], res[ref]["_scores"]  # the same entities: every method reads one model's
                    r[f"comprehensiveness_vs_{ref}"] = paired(a["comprehensiveness"], b["comprehensiveness"])
                    r[f"sufficiency_vs_{ref}"] = paired(b["sufficiency"], a["sufficiency"])  # lower is better
        out["models"][label] = {m: {k: v for k, v in r.items() if not k.startswith("_")} for m, r in res.items()}
    out["int8_vs_torch_student"] = agreement(kept[("student", "occlusion")], kept[("student-onnx", "occlusion")])
    return out


def markdown(res: dict) -> str:
    lines = ["# Per-entity attribution faithfulness (token models)", "",
             measured(res["machine"]) + ". Produced by `python -m bench.token_faithfulness <dataset>`.", "",
             "Each entity a model tags is explained (a score per word of its sentence). Comprehensiveness: the drop "
             "in the entity's probability (the mean of its words' tag probabilities) when the method's top words "
             "are masked (higher = the words matter); sufficiency: the drop when every other word is masked (lower "
             "= they carry the entity); each the mean over entities of AOPC across the 1/5/10/20/50% bins. Words "
             "are masked, not removed, so every tag keeps its position. \"vs random\": the paired difference per "
             "entity, positive = better, 95% bootstrap CI over entities (* where it excludes 0).", ""]
    for name, d in res["datasets"].items():
        lines += [f"## {name}", "", f"{d['sentences']} test sentences; project `{d['project']}`.", "",
                  "| model | method | s/sentence | entities (scored) | comprehensiveness | sufficiency | "
                  "comp. vs random | suff. vs random | comp. vs occlusion | suff. vs occlusion |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, methods in d["models"].items():
            for method, r in methods.items():
                lines.append(f"| {label} | {method} | {r['seconds_per_sentence']:.4f} | {r['entities']} "
                             f"({r['scored']}) | {r['comprehensiveness']:.3f} | {r['sufficiency']:.3f} | "
                             f"{fmt(r.get('comprehensiveness_vs_random'))} | {fmt(r.get('sufficiency_vs_random'))} | "
                             f"{fmt(r.get('comprehensiveness_vs_occlusion'))} | "
                             f"{fmt(r.get('sufficiency_vs_occlusion'))} |")
        a = d["int8_vs_torch_student"]
        if a["entities"]:
            lines += ["", f"int8 ONNX student vs the torch student (occlusion on both, the {a['entities']} entities "
                          f"both tag alike): the same strongest word for {a['same_top_word']:.1%}; top-3 overlap "
                          f"{a['top3_overlap']:.1%}."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--entities", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name in args.datasets:
        print(record(OUT, "token_faithfulness", name, dataset(name, args.sentences, args.entities, args.seed),
                     markdown))


if __name__ == "__main__":
    main()
