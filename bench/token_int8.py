"""The int8 recipes for a token student, judged as export judges them and by the measure the gate ships on.

    python -m bench.token_int8 wnut16 turkish-web turkish-wiki      # after bench/ner_repro.py made the projects

For each project bench/ner_repro.py left in bench/work/ner_repro/<name> (its trained student and teacher, its split),
every int8 recipe of pipeline/core/onnx_model.py is made from the student's fp32 ONNX graph, and scored against the
torch student on the selection sentences export chooses a recipe on (validation topped up from train, never test)
and on the test sentences: word tag agreement (the lower of batch 1 and 32, as export takes it) and the entity-F1
ratio to the torch student's (the gate's measure), with the test's paired difference; then the CPU throughput of
each graph and of the torch teacher on the test sentences' words at batch 32, side by side in one process (words in,
tags out; the stage's throughput figure also pays for reading raw text). Writes bench/results/token_int8.json and
TOKEN_INT8.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import OUT, fmt_diff, measured, record
from bench.ner_repro import WORK


def _tags(logits: list, names: list[str]) -> list[list[str]]:
    from pipeline.core.token_encoding import predicted_tags

    return [predicted_tags(x, names)[0] for x in logits]


def agreement(a: list[list[str]], b: list[list[str]]) -> float:
    same = sum(x == y for s, t in zip(a, b) for x, y in zip(s, t))
    return round(same / max(1, sum(map(len, a))), 4)


def per_second(fn, words: list[list[str]], repeats: int = 3) -> float:
    """Sentences per second, the best of `repeats` passes over `words` (the first pass warms up)."""
    fn(words[:32])
    best = min(_timed(fn, words) for _ in range(repeats))
    return round(len(words) / best, 1)


def _timed(fn, words: list[list[str]]) -> float:
    start = time.perf_counter()
    fn(words)
    return time.perf_counter() - start


def judge(name: str) -> dict:
    from pipeline.core.entities import entity_counts, entity_f1, paired_entity_f1
    from pipeline.core.io import read_lineage
    from pipeline.core.modeling import lineage_max_length, load_token_classifier, load_tokenizer
    from pipeline.core.onnx_model import FP32_FILE, ONNX_FILE, RECIPES, export_fp32, quantize_int8
    from pipeline.core.params import load_params
    from pipeline.core.sequence_export import selection_frame
    from pipeline.core.token_encoding import encode_words
    from pipeline.core.token_scoring import OnnxTagger
    from pipeline.core.token_training import predict_word_logits

    repo = WORK / name
    params = load_params(repo / "params.yaml")
    split = {s: pd.read_parquet(repo / "data" / "processed" / f"{s}.parquet") for s in ("train", "val", "test")}
    sel = selection_frame(split["val"], split["train"], params.export.selection_rows, params.seed)
    stride = params.tokens.stride
    data = {"selection": ([list(w) for w in sel["tokens"]], [list(t) for t in sel["tags"]]),
            "test": ([list(w) for w in split["test"]["tokens"]], [list(t) for t in split["test"]["tags"]])}
    src, teacher_dir = repo / "data" / "models" / "student", repo / "data" / "models" / "teacher"
    model, tok = load_token_classifier(str(src), str(src)), load_tokenizer(str(src), str(src))
    lineage = read_lineage(src)
    max_length = lineage_max_length(lineage)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def torch_tags(m, t, words: list[list[str]], ml: int) -> list[list[str]]:
        return _tags(predict_word_logits(m, encode_words(words, t, ml, stride), 32)[0], names)

    ref = {k: torch_tags(model, tok, w, max_length) for k, (w, _) in data.items()}
    f1_torch = {k: entity_f1(entity_counts(g, ref[k])) for k, (_, g) in data.items()}
    teacher, t_tok = load_token_classifier(str(teacher_dir), str(teacher_dir)), load_tokenizer(str(teacher_dir),
                                                                                                str(teacher_dir))
    t_len = lineage_max_length(read_lineage(teacher_dir))
    test_words = data["test"][0]
    out = {"test_sentences": len(test_words), "selection_sentences": len(data["selection"][0]),
           "student_entity_f1": {k: round(float(v), 4) for k, v in f1_torch.items()},
           "teacher_sentences_per_s": per_second(lambda w: torch_tags(teacher, t_tok, w, t_len), test_words),
           "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "student"
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        cfg = json.loads((dest / "config.json").read_text())  # the window export writes for the graph
        (dest / "config.json").write_text(json.dumps({**cfg, "export_max_length": max_length,
                                                      "window_stride": stride}))
        export_fp32(model, tok, dest / FP32_FILE, max_length, per_position=True)
        for recipe in ["none", *RECIPES]:
            if recipe == "none":
                shutil.copy(dest / FP32_FILE, dest / ONNX_FILE)
            else:
                quantize_int8(dest / FP32_FILE, dest / ONNX_FILE, recipe)
            tagger = OnnxTagger(dest, lineage, stride=stride)
            row = {}
            for k, (words, gold) in data.items():
                by_batch = {b: _tags(tagger.word_logits(words, b), names) for b in (1, 32)}
                f1 = {b: entity_f1(entity_counts(gold, t)) for b, t in by_batch.items()}
                worst = min(by_batch, key=lambda b: f1[b])
                row[k] = {"agreement": min(agreement(t, ref[k]) for t in by_batch.values()),
                          "entity_f1": round(float(f1[worst]), 4),
                          "entity_f1_ratio": round(float(f1[worst] / f1_torch[k]), 4) if f1_torch[k] else 1.0}
                if k == "test":
                    row[k]["vs_torch"] = paired_entity_f1(entity_counts(gold, by_batch[worst]),
                                                          entity_counts(gold, ref[k]))
            row["sentences_per_s"] = per_second(lambda w: tagger.word_logits(w, 32), test_words)
            row["vs_teacher"] = round(row["sentences_per_s"] / out["teacher_sentences_per_s"], 2)
            out["recipes"][recipe] = row
            print(name, recipe, row)
    return out


def markdown(res: dict) -> str:
    lines = ["# int8 recipes for a token student: selection vs test, entity F1 and speed", "",
             measured(res["machine"]) + ". Produced by `python -m bench.token_int8`.", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| data | graph | selection agreement | selection entity-F1 ratio | test agreement | test entity-F1 "
             "ratio | int8 − torch (test) | sentences/s | × teacher |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["datasets"].items():
        for recipe, x in r["recipes"].items():
            s, t = x["selection"], x["test"]
            lines.append(f"| {name} | {recipe} | {s['agreement']:.4f} | {s['entity_f1_ratio']:.4f} | "
                         f"{t['agreement']:.4f} | {t['entity_f1_ratio']:.4f} | {fmt_diff(t['vs_torch'])} | "
                         f"{x['sentences_per_s']} | {x['vs_teacher']}× |")
    lines += ["", "Selection sentences: " + ", ".join(f"{n} {r['selection_sentences']}" for n, r in
                                                      res["datasets"].items()) +
              "; test sentences: " + ", ".join(f"{n} {r['test_sentences']}" for n, r in res["datasets"].items()) +
              "; teacher sentences/s: " + ", ".join(f"{n} {r['teacher_sentences_per_s']}" for n, r in
                                                   res["datasets"].items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    for name in args.names:
        print(record(OUT, "token_int8", name, judge(name), markdown))


if __name__ == "__main__":
    main()
