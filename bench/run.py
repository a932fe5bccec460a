"""Benchmarks: every figure is a ratio of two things measured side by side in one run on the same machine.

    python -m bench.run                 # all CPU figures (about 10 minutes on 2 cores)
    python -m bench.run --only train    # one figure: train, overhead, dvc, augment, student, gpu, audit, onnx,
                                        # logits, predict, serve
    python -m bench.run --full-repro    # also time a forced full `dvc repro` in a scratch copy (+10 min)

Writes bench/results/results.json (machine-readable) and bench/results/RESULTS.md (the table the README shows),
each with the machine (cores, CPU model, torch version, device) and date. Never used as timed assertions in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import OUT, ROOT, machine, torch_predictor
from pipeline.core.io import read_table
from pipeline.core.params import load_params

TRAIN = ROOT / "data" / "processed" / "train.parquet"
VAL = ROOT / "data" / "processed" / "val.parquet"


# ---------------------------------------------------------------------------------------------- 1. train speed
def _trainer_run(dynamic: bool, steps: int, batch: int, texts: list[str], labels: list[int], model_name: str,
                 bf16: bool = False) -> dict:
    """`steps` optimiser steps; dynamic = our settings, else the HF example's defaults (pad to 128, random order)."""
    import datasets
    import torch
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from pipeline.core.modeling import load_classifier, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(model_name)
    model = load_classifier(model_name, num_labels=2)
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=128,
                              padding=False if dynamic else "max_length"), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-5,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0,
        train_sampling_strategy="group_by_length" if dynamic else "random", bf16=bf16,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    collator = DataCollatorWithPadding(tok) if dynamic else default_data_collator
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    real_tokens = sum(min(len(x), 128) for x in tok(texts, truncation=True, max_length=128)["input_ids"])
    samples = steps * batch
    return {"samples_per_s": samples / seconds, "seconds": seconds,
            "real_tokens_per_s": samples * real_tokens / len(texts) / seconds}


def _train_profile(texts: list[str], labels: list[int], model_name: str, steps: int = 10, batch: int = 32) -> dict:
    """Where a training step's time goes (our settings): torch.profiler's self CPU time by kind of op, as shares of
    the wall time of `steps` steps; what no op accounts for is Python, the data collator and the Trainer."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from pipeline.core.modeling import load_classifier, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(model_name)
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels}).map(
        lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                             report_to=[], save_strategy="no", eval_strategy="no", disable_tqdm=True, seed=0,
                             train_sampling_strategy="group_by_length", dataloader_pin_memory=False)
    trainer = Trainer(model=load_classifier(model_name, num_labels=2), args=args, train_dataset=ds,
                      data_collator=DataCollatorWithPadding(tok))
    kinds = {"matmul": ("mm", "matmul", "linear"), "optimizer (AdamW)": ("foreach", "adam", "optimizer"),
             "softmax and attention": ("softmax", "attention"), "embedding": ("embedding",)}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    shares: dict[str, float] = {k: 0.0 for k in [*kinds, "other ops (layer norm, GELU, dropout, copies, ...)"]}
    for e in prof.key_averages():
        if e.key.startswith("ProfilerStep") or not e.key.startswith(("aten::", "Optimizer", "torch::")):
            continue
        kind = next((k for k, words in kinds.items() if any(w in e.key.lower() for w in words)),
                    "other ops (layer norm, GELU, dropout, copies, ...)")
        shares[kind] += e.self_cpu_time_total / 1e6 / wall
    shares["not in any op (Python, collator, Trainer)"] = max(0.0, 1 - sum(shares.values()))
    return {"steps": steps, "wall_seconds": wall, "shares": {k: round(v, 3) for k, v in shares.items()}}


def bench_train(steps: int = 30, batch: int = 32) -> dict:
    p = load_params(ROOT / "params.yaml")
    df = read_table(TRAIN)
    names = sorted(df["label"].unique())
    texts, labels = df["text"].tolist(), [names.index(x) for x in df["label"]]
    ours = _trainer_run(True, steps, batch, texts, labels, p.train.model)
    hf = _trainer_run(False, steps, batch, texts, labels, p.train.model)
    ceiling = _train_ceiling(p.train.model, ours["real_tokens_per_s"] / ours["samples_per_s"])
    return {"steps": steps, "batch_size": batch, "model": p.train.model, "pipeline": ours, "hf_example_defaults": hf,
            "speedup": ours["samples_per_s"] / hf["samples_per_s"], "target": 3.0, "ceiling": ceiling,
            "of_ceiling": ours["samples_per_s"] / ceiling["samples_per_s"],
            "profile": _train_profile(texts, labels, p.train.model, batch=batch)}


def _matmul_gflops(n: int = 1024, rounds: int = 20) -> float:
    """This CPU's measured fp32 matmul peak with torch's threads (the best of `rounds` n x n products)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _train_ceiling(model_name: str, tokens_per_sample: float) -> dict:
    """Samples/s training could reach if every FLOP ran at the matmul peak: 6 FLOPs per weight per token (forward 2,
    backward 4; Kaplan et al. 2020) on the weights that multiply (embedding tables are looked up, not multiplied)."""
    from pipeline.core.modeling import load_classifier

    model = load_classifier(model_name, num_labels=2)
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - emb
    flops = 6 * dense * tokens_per_sample
    peak = _matmul_gflops()
    return {"matmul_gflops": peak, "dense_params": dense, "tokens_per_sample": tokens_per_sample,
            "flops_per_sample": flops, "samples_per_s": peak * 1e9 / flops}


# ---------------------------------------------------------------------------------------------- 2. stage overhead
BARE = textwrap.dedent("""
    import sys, time, pandas as pd, datasets, torch
    from transformers import AutoTokenizer, AutoModelForSequenceClassification, Trainer, TrainingArguments, DataCollatorWithPadding
    from pipeline.core.modeling import resolve_model
    model_dir, train_path, val_path, out, steps, batch = sys.argv[1:7]
    tr, va = pd.read_parquet(train_path), pd.read_parquet(val_path)
    names = sorted(tr.label.unique())
    tok = AutoTokenizer.from_pretrained(resolve_model(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(model_dir), num_labels=len(names))
    enc = lambda d: datasets.Dataset.from_dict({"text": d.text.tolist(), "label": [names.index(x) for x in d.label]}).map(
        lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=out + "/ckpt", max_steps=int(steps), per_device_train_batch_size=int(batch),
        per_device_eval_batch_size=64, learning_rate=1e-4, warmup_steps=0.06, weight_decay=0.01, report_to=[],
        eval_strategy="epoch", save_strategy="epoch", seed=42, train_sampling_strategy="group_by_length",
        logging_steps=10, dataloader_pin_memory=False)
    t = Trainer(model=model, args=args, train_dataset=enc(tr), eval_dataset=enc(va), processing_class=tok,
                data_collator=DataCollatorWithPadding(tok))
    t.train(); t.evaluate(); t.save_model(out + "/model")
""")


def _timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def bench_overhead(steps: int = 60, batch: int = 32, rounds: int = 3) -> dict:
    """Wall time of `python -m pipeline.stages.train` vs a bare script doing the same work, alternated per round."""
    import yaml

    tmp = Path(tempfile.mkdtemp())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(max_steps=steps, batch_size=batch, early_stopping_patience=0, resume=False)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp / "bare.py").write_text(BARE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_LOG_LEVEL": "WARNING"}
    stage_cmd = [sys.executable, "-m", "pipeline.stages.train", "--params", str(tmp / "params.yaml"), "--train", str(TRAIN),
                 "--val", str(VAL), "--output", str(tmp / "out"), "--checkpoints", str(tmp / "ckpt"),
                 "--live", str(tmp / "live")]
    bare_cmd = [sys.executable, str(tmp / "bare.py"), params["train"]["model"], str(TRAIN), str(VAL), str(tmp / "b"),
                str(steps), str(batch)]
    stage, bare = [], []
    for _ in range(rounds):
        stage.append(_timed(stage_cmd, ROOT, env))
        bare.append(_timed(bare_cmd, ROOT, env))
    shutil.rmtree(tmp, ignore_errors=True)
    s, b = statistics.median(stage), statistics.median(bare)
    return {"steps": steps, "stage_seconds": s, "bare_trainer_seconds": b, "overhead": s / b - 1, "target": 0.05,
            "rounds": rounds}


# ---------------------------------------------------------------------------------------------- 3. dvc no-op
def bench_dvc(rounds: int = 5) -> dict:
    dvc = [sys.executable, "-m", "dvc"]
    repro, status = [], []
    for _ in range(rounds):
        repro.append(_timed(dvc + ["repro"], ROOT))
        status.append(_timed(dvc + ["status"], ROOT))
    r, s = statistics.median(repro), statistics.median(status)
    return {"noop_repro_seconds": r, "status_seconds": s, "ratio": r / s, "target": 1.5, "rounds": rounds}


# ---------------------------------------------------------------------------------------------- 4. augmentation
def bench_augment(n_syn: int = 3000, n_bt: int = 200, n_single: int = 40) -> dict:
    import random

    import numpy as np

    from pipeline.core.params import SynonymParams
    from pipeline.stages.augment import ApertiumTranslator, SynonymSwapper

    texts = read_table(ROOT / "data" / "interim" / "clean.parquet")["text"].tolist()
    p = SynonymParams()
    swapper = SynonymSwapper(p, seed=0)  # the stage's path: seeded per row, cached WordNet look-ups
    import nlpaug.augmenter.word as naw

    from pipeline.core.sequence_augment import SKIP_TOKEN, TOKEN

    # The reference: nlpaug configured identically (same tokenizer, skip rule and offline tagger; its own tagger
    # cannot load offline), called one sentence at a time as a user would, without our per-row seeding or cache.
    plain = naw.SynonymAug(aug_src="wordnet", aug_p=p.aug_p, aug_min=p.aug_min, aug_max=p.aug_max,
                           tokenizer=TOKEN.findall, reverse_tokenizer="".join, stopwords_regex=SKIP_TOKEN)
    plain.model.pos_tag = swapper._pos_tag
    syn_texts = texts[:n_syn]
    ids = [str(i) for i in range(len(syn_texts))]
    # Warm both on the very texts timed: NLTK parses each WordNet synset on first use, and that one-off cost
    # would otherwise land on whichever path runs first.
    swapper(1)(syn_texts, ids)
    [plain.augment(t) for t in syn_texts]

    def ours() -> None:
        swapper(1)(syn_texts, ids)

    def theirs() -> None:
        random.seed(0)
        np.random.seed(0)
        for t in syn_texts:
            plain.augment(t)

    syn = _ratio(ours, theirs, len(syn_texts), rounds=5)  # ~0.1 s a round at 600 texts read 0.33x to 1.9x
    tr = ApertiumTranslator()
    bt_texts = texts[:n_bt]
    one = texts[n_bt:n_bt + n_single]
    batched = _ratio(lambda: tr.back_translate("eng", "spa")(bt_texts, []), None, len(bt_texts))
    single = _ratio(lambda: [tr.back_translate("eng", "spa")([t], []) for t in one], None, len(one))
    return {
        "synonym": {**syn, "target": 3.0},
        "back_translation": {"batched_per_s": batched["ours_per_s"], "one_call_per_sentence_per_s": single["ours_per_s"],
                             "speedup": batched["ours_per_s"] / single["ours_per_s"], "target": 10.0},
    }


def _ratio(ours: Callable[[], Any], theirs: Callable[[], Any] | None, n: int, rounds: int = 2) -> dict:
    a, b = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ours()
        a.append(time.perf_counter() - t0)
        if theirs:
            t0 = time.perf_counter()
            theirs()
            b.append(time.perf_counter() - t0)
    out = {"ours_per_s": n / statistics.median(a)}
    if theirs:
        out.update(theirs_per_s=n / statistics.median(b), speedup=statistics.median(b) / statistics.median(a))
    return out


# ---------------------------------------------------------------------------------------------- 5. student vs teacher
def bench_student() -> dict:
    from pipeline.core.params import EvaluateParams
    from pipeline.core.scoring import weights_size
    from pipeline.core.speed import measure_speed

    test = read_table(ROOT / "data" / "processed" / "test.parquet")
    preds = {name: torch_predictor(ROOT / "models" / name) for name in ("teacher", "student")}
    speed = measure_speed(preds, test["text"].tolist(), EvaluateParams(throughput_batches=10, latency_runs=90))
    ev = json.loads((ROOT / "metrics" / "eval.json").read_text())
    t, s = speed["teacher"], speed["student"]
    return {
        "teacher": {**t, "size_bytes": weights_size(ROOT / "models" / "teacher"), "macro_f1": ev["teacher"]["macro_f1"]},
        "student": {**s, "size_bytes": weights_size(ROOT / "models" / "student"), "macro_f1": ev["student"]["macro_f1"]},
        "throughput_speedup": s["cpu_samples_per_s_batch"] / t["cpu_samples_per_s_batch"],
        "latency_speedup": t["cpu_latency_ms_batch1"] / s["cpu_latency_ms_batch1"],
        "macro_f1_retained": ev["student"]["macro_f1"] / ev["teacher"]["macro_f1"],
        "baseline_macro_f1": ev["baseline"]["macro_f1"],
        "targets": {"throughput_speedup": 2.0, "macro_f1_retained": 0.98},
    }


# ---------------------------------------------------------------------------------------------- 6. full repro
def bench_full_repro() -> dict:
    """A forced `dvc repro` of everything in a scratch clone, under /usr/bin/time for peak memory."""
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "repo")], check=True)
    repo = tmp / "repo"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "dvc", "repro", "-f"], cwd=repo, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kb = next((int(line.split(":")[1]) for line in proc.stderr.splitlines() if "Maximum resident" in line), 0)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "peak_rss_mib": peak_kb / 1024, "ok": proc.returncode == 0,
            "note": "peak RSS of the largest single process (GNU time -v)"}


# ---------------------------------------------------------------------------------------------- 8. label audit
def bench_audit(rounds: int = 3) -> dict:
    """The audit stage's core on the cleaned default data, next to one fit of the same TF-IDF + LR model."""
    from pipeline.core.io import read_raw_table
    from pipeline.core.modeling import tfidf_logreg
    from pipeline.stages.audit import audit
    from pipeline.stages.clean import clean

    p = load_params(ROOT / "params.yaml")
    raw, name = read_raw_table(str(ROOT / "data" / "raw" / "sms-spam.csv"), p.clean.format, p.clean.encoding)
    kept = clean(raw, p.clean, name).kept
    a = p.audit
    audit_s, fit_s, flagged = [], [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        flagged = len(audit(kept, a, p.seed).issues)
        audit_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tfidf_logreg("word", a.ngram_max, 1, 100_000, True, a.C, "balanced", a.max_iter, p.seed).fit(
            kept["text"], kept["label"])
        fit_s.append(time.perf_counter() - t0)
    audit_med, fit_med = statistics.median(audit_s), statistics.median(fit_s)
    return {"rows": len(kept), "folds": a.folds, "flagged": flagged, "audit_seconds": audit_med,
            "one_fit_seconds": fit_med, "ratio": audit_med / fit_med}


# ---------------------------------------------------------------------------------------------- 7. GPU
def bench_gpu(steps: int = 60, batch: int = 64) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    p = load_params(ROOT / "params.yaml")
    df = read_table(TRAIN)
    names = sorted(df["label"].unique())
    texts, labels = df["text"].tolist(), [names.index(x) for x in df["label"]]
    fp32 = _trainer_run(True, steps, batch, texts, labels, p.train.model)
    bf16 = _trainer_run(True, steps, batch, texts, labels, p.train.model, bf16=True)
    hf = _trainer_run(False, steps, batch, texts, labels, p.train.model)
    return {"device": torch.cuda.get_device_name(0), "steps": steps, "batch_size": batch, "fp32": fp32,
            "bf16": bf16, "hf_example_defaults_fp32": hf, "bf16_vs_fp32": bf16["samples_per_s"] / fp32["samples_per_s"]}




# ---------------------------------------------------------------------------------------------- 9-12. deployment
def _peak_rss(cmd: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a subprocess, polled every 50 ms with psutil."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed ({proc.returncode})")
    return time.perf_counter() - t0, peak / 2**20


def bench_onnx() -> dict:
    """The int8 ONNX student (models/student-onnx) vs the torch teacher, side by side, as evaluate times them."""
    from pipeline.core.onnx_model import ONNX_FILE, OnnxClassifier
    from pipeline.core.params import EvaluateParams
    from pipeline.core.speed import measure_speed

    texts = read_table(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()
    onnx = OnnxClassifier(ROOT / "models" / "student-onnx")
    preds = {"teacher": torch_predictor(ROOT / "models" / "teacher"),
             "student_onnx": lambda b: onnx.logits(b, 32)}
    speed = measure_speed(preds, texts, EvaluateParams(throughput_batches=10, latency_runs=90))
    ev = json.loads((ROOT / "metrics" / "eval.json").read_text())
    t, o = speed["teacher"], speed["student_onnx"]
    return {"teacher": t, "student_onnx": o,
            "throughput_speedup": o["cpu_samples_per_s_batch"] / t["cpu_samples_per_s_batch"],
            "latency_speedup": t["cpu_latency_ms_batch1"] / o["cpu_latency_ms_batch1"],
            "size_mib": (ROOT / "models" / "student-onnx" / ONNX_FILE).stat().st_size / 2**20,
            "teacher_size_mib": (ROOT / "models" / "teacher" / "model.safetensors").stat().st_size / 2**20,
            "macro_f1_retained": ev["student_onnx"]["macro_f1"] / ev["teacher"]["macro_f1"],
            "targets": {"throughput_speedup": 8.0}}


def bench_logits(n: int = 2000) -> dict:
    """teacher_logits' inference path (torch, length-sorted batches) vs ONNX fp32 of the same teacher."""
    from pipeline.core.modeling import load_classifier, load_tokenizer, predict_logits
    from pipeline.core.onnx_model import OnnxClassifier, export_fp32

    texts = read_table(TRAIN)["text"].tolist()[:n]
    d = str(ROOT / "data" / "models" / "teacher")
    model, tok = load_classifier(d), load_tokenizer(d)
    tmp = Path(tempfile.mkdtemp())
    export_fp32(model, tok, tmp / "model.onnx", 128)
    tok.save_pretrained(tmp)
    model.config.save_pretrained(tmp)
    onnx = OnnxClassifier(tmp)
    t0 = time.perf_counter()
    ref = predict_logits(model, tok, texts, 64, 128, device="cpu", progress=False)
    torch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = onnx.logits(texts, 64)
    onnx_s = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": n, "torch_rows_per_s": n / torch_s, "onnx_fp32_rows_per_s": n / onnx_s,
            "speedup": torch_s / onnx_s, "max_abs_logit_diff": float(abs(ref - got).max())}


def bench_predict(rows: int = 20_000, naive_rows: int = 2000, small: int = 100_000, big: int = 1_000_000) -> dict:
    """finetune predict (int8 ONNX student, streaming) on a `rows`-row file: rows/s and peak RSS, vs a naive loop
    calling transformers.pipeline row by row on the torch student. Memory stays flat with file size: peak RSS at 1M
    vs 100k rows, scored with models/baseline (the int8 student needs ~35 min for 1M rows on 2 cores; the streaming
    code path is the same for every model)."""
    import pandas as pd

    texts = read_table(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()
    tmp = Path(tempfile.mkdtemp())

    def file_of(n: int) -> Path:
        p = tmp / f"in{n}.csv"
        if not p.is_file():
            pd.DataFrame({"text": (texts * (n // len(texts) + 1))[:n]}).to_csv(p, index=False)
        return p

    def run_predict(n: int, model: str) -> tuple[float, float]:
        return _peak_rss([sys.executable, "-m", "pipeline.commands.predict", "--model", model, "--input", str(file_of(n)),
                          "--output", str(tmp / f"out{n}.parquet")])

    secs, rss = run_predict(rows, "models/student-onnx")
    naive = textwrap.dedent(f"""
        import pandas as pd
        from transformers import pipeline
        clf = pipeline("text-classification", model="models/student", device=-1)
        out = [clf(t)[0] for t in pd.read_csv("{file_of(naive_rows)}")["text"].tolist()]
    """)
    naive_s, naive_rss = _peak_rss([sys.executable, "-c", naive])
    small_s, small_rss = run_predict(small, "models/baseline")
    big_s, big_rss = run_predict(big, "models/baseline")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "seconds": secs, "rows_per_s": rows / secs, "peak_rss_mib": rss,
            "naive_rows": naive_rows, "naive_rows_per_s": naive_rows / naive_s, "naive_peak_rss_mib": naive_rss,
            "speedup": (rows / secs) / (naive_rows / naive_s),
            "memory_model": "models/baseline", "small_rows": small, "small_peak_rss_mib": small_rss,
            "small_rows_per_s": small / small_s, "big_rows": big, "big_peak_rss_mib": big_rss,
            "big_rows_per_s": big / big_s, "rss_ratio_big_vs_small": big_rss / small_rss}


def bench_serve(seconds: int = 10, repeats: int = 3, connections: tuple[int, ...] = (1, 16, 64)) -> dict:
    """`finetune serve` as the README starts it (no options), loaded by wrk (a C client: a Python one on the same
    cores cannot offer the load, issue 35) with one-text requests at 1, 16 and 64 connections; medians of `repeats`."""
    from bench.serve_wrk import SERVERS
    from bench.serve_wrk import run as wrk_run

    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    default = next(iter(SERVERS))
    res = wrk_run(str(ROOT / "models" / "student-onnx"), seconds, list(connections), repeats,
                  servers={default: SERVERS[default]})
    server = res["servers"][default]
    return {"client": res["client"], "seconds": seconds, "repeats": repeats, "workers": server["workers"]["count"],
            "threads": server["workers"]["threads"], "rss_mib": server["rss_mib"],
            "runs": [{k: r[k] for k in ("connections", "requests_per_s", "p50_ms", "p99_ms", "p99_range_ms",
                                        "errors")} for r in server["runs"]]}


def bench_lineage() -> dict:
    """`lineage trace` / `model` on the workspace, and `diff` of the last two commits that changed dvc.lock (read
    from the DVC cache through dvc.api), each as a user runs it: a fresh process, wall time."""
    revs = subprocess.run(["git", "-C", str(ROOT), "log", "-n2", "--format=%h", "--", "dvc.lock"], capture_output=True,
                          text=True).stdout.split()
    test = read_table(ROOT / "data" / "processed" / "test.parquet")
    base = [sys.executable, "-m", "pipeline.commands.lineage"]
    out = {}
    for name, args in (("trace", ["trace", "--raw-row", str(int(test["raw_row"].iloc[0]))]),
                       ("model", ["model", "models/teacher"]),
                       ("diff", ["diff", revs[1], revs[0]] if len(revs) == 2 else ["diff"])):
        out[f"{name}_seconds"] = _timed(base + args, ROOT)
    out["diff_revisions"] = revs[::-1]
    return out


BENCHES = {"train": bench_train, "overhead": bench_overhead, "dvc": bench_dvc, "augment": bench_augment,
           "student": bench_student, "gpu": bench_gpu, "audit": bench_audit, "onnx": bench_onnx, "logits": bench_logits,
           "predict": bench_predict, "serve": bench_serve, "lineage": bench_lineage}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Last run {m['date']} on {m['cores']} cores ({m['cpu']}), torch {m['torch']}, device {m['device']}.", ""]
    where = {name: v.get("_measured") for name, v in results.items() if isinstance(v, dict) and name != "machine"}
    if len(set(where.values())) > 1:  # `--only` reruns some figures: say where and when each one was measured
        lines += ["Figures measured in different runs: " + "; ".join(
            f"{name}: {w or 'an earlier run'}" for name, w in where.items()) + ".", ""]
    lines += ["| # | figure | ours | reference | ratio | target |", "|---|---|---|---|---|---|"]
    r = results
    if "train" in r:
        t = r["train"]
        lines.append(f"| 1 | teacher train samples/s (batch {t['batch_size']}, {t['steps']} steps) | "
                     f"{t['pipeline']['samples_per_s']:.1f} ({t['pipeline']['real_tokens_per_s']:.0f} tok/s) | "
                     f"{t['hf_example_defaults']['samples_per_s']:.1f} ({t['hf_example_defaults']['real_tokens_per_s']:.0f} tok/s), HF example defaults | "
                     f"**{t['speedup']:.2f}×** | ≥ 3× |")
        if "ceiling" in t:
            c = t["ceiling"]
            lines.append(f"| 1b | teacher train samples/s vs this CPU's ceiling (matmul peak {c['matmul_gflops']:.0f} "
                         f"GFLOP/s ÷ 6 × {c['dense_params'] / 1e6:.1f}M weights × {c['tokens_per_sample']:.0f} tokens) | "
                         f"{t['pipeline']['samples_per_s']:.1f} | {c['samples_per_s']:.1f} | "
                         f"**{100 * t['of_ceiling']:.0f}%** | ≥ 60% |")
        if "profile" in t:
            lines.append(f"| 1c | where a training step's time goes ({t['profile']['steps']} steps, torch.profiler "
                         "self CPU time) | " + "; ".join(f"{k} {100 * v:.0f}%" for k, v in
                                                         t["profile"]["shares"].items()) + " | | | |")
    if "overhead" in r:
        o = r["overhead"]
        lines.append(f"| 2 | train stage wall time vs bare `Trainer.train()` ({o['steps']} steps, same work) | "
                     f"{o['stage_seconds']:.1f} s | {o['bare_trainer_seconds']:.1f} s | **{100 * o['overhead']:+.1f}%** | ≤ +5% |")
    if "dvc" in r:
        d = r["dvc"]
        lines.append(f"| 3 | no-op `dvc repro` vs `dvc status` | {d['noop_repro_seconds']:.2f} s | {d['status_seconds']:.2f} s | "
                     f"**{d['ratio']:.2f}×** | ≤ 1.5× |")
    if "augment" in r:
        s, b = r["augment"]["synonym"], r["augment"]["back_translation"]
        lines.append(f"| 4a | synonym swap sentences/s | {s['ours_per_s']:.0f} | {s['theirs_per_s']:.0f} (nlpaug, one sentence per call) | "
                     f"**{s['speedup']:.2f}×** | ≥ 3× |")
        lines.append(f"| 4b | back-translation (apertium) sentences/s | {b['batched_per_s']:.1f} batched | "
                     f"{b['one_call_per_sentence_per_s']:.1f} one call per sentence | **{b['speedup']:.1f}×** | ≥ 10× |")
    if "student" in r:
        s = r["student"]
        lines.append(f"| 5a | student vs teacher CPU samples/s (batch 32) | {s['student']['cpu_samples_per_s_batch']:.0f} | "
                     f"{s['teacher']['cpu_samples_per_s_batch']:.0f} | **{s['throughput_speedup']:.2f}×** | ≥ 2× |")
        lines.append(f"| 5b | student vs teacher CPU latency (batch 1) | {s['student']['cpu_latency_ms_batch1']:.1f} ms | "
                     f"{s['teacher']['cpu_latency_ms_batch1']:.1f} ms | **{s['latency_speedup']:.2f}×** | |")
        lines.append(f"| 5c | test macro-F1 retained by the student | {s['student']['macro_f1']:.4f} | "
                     f"{s['teacher']['macro_f1']:.4f} (baseline {s['baseline_macro_f1']:.4f}) | **{100 * s['macro_f1_retained']:.1f}%** | ≥ 98% |")
        lines.append(f"| 5d | size on disk | {s['student']['size_bytes'] / 2**20:.1f} MiB | {s['teacher']['size_bytes'] / 2**20:.1f} MiB | "
                     f"{s['student']['size_bytes'] / s['teacher']['size_bytes']:.2f}× | |")
    if "full_repro" in r:
        f = r["full_repro"]
        lines.append(f"| 6 | whole default `dvc repro -f` | {f['seconds'] / 60:.1f} min, peak RSS {f['peak_rss_mib']:.0f} MiB | | | ≤ 15 min |")
    if "audit" in r:
        a = r["audit"]
        lines.append(f"| 8 | label audit (cleanlab, {a['folds']}-fold TF-IDF + LR) on {a['rows']} rows: {a['flagged']} flagged | "
                     f"{a['audit_seconds']:.1f} s | {a['one_fit_seconds']:.1f} s (one fit of the same model) | "
                     f"{a['ratio']:.1f}× | |")
    if "onnx" in r:
        o = r["onnx"]
        lines.append(f"| 9a | int8 ONNX student vs torch teacher, CPU samples/s (batch 32) | "
                     f"{o['student_onnx']['cpu_samples_per_s_batch']:.0f} | {o['teacher']['cpu_samples_per_s_batch']:.0f} | "
                     f"**{o['throughput_speedup']:.2f}×** | ≥ 8× |")
        lines.append(f"| 9b | int8 ONNX student vs torch teacher, CPU latency (batch 1) | "
                     f"{o['student_onnx']['cpu_latency_ms_batch1']:.1f} ms | {o['teacher']['cpu_latency_ms_batch1']:.1f} ms | "
                     f"**{o['latency_speedup']:.2f}×** | |")
        lines.append(f"| 9c | int8 ONNX student: test macro-F1 retained, size | {100 * o['macro_f1_retained']:.1f}%, "
                     f"{o['size_mib']:.1f} MiB | teacher {o['teacher_size_mib']:.1f} MiB | | ≥ 98% |")
    if "logits" in r:
        g = r["logits"]
        lines.append(f"| 10 | teacher logits rows/s: ONNX fp32 vs torch ({g['rows']} train rows) | {g['onnx_fp32_rows_per_s']:.0f} | "
                     f"{g['torch_rows_per_s']:.0f} | {g['speedup']:.2f}× (max diff {g['max_abs_logit_diff']:.1e}) | |")
    if "predict" in r:
        p = r["predict"]
        lines.append(f"| 11a | `finetune predict` rows/s on {p['rows']:,} rows (int8 ONNX, streaming) | {p['rows_per_s']:.0f}, "
                     f"peak RSS {p['peak_rss_mib']:.0f} MiB | {p['naive_rows_per_s']:.0f}, naive `transformers.pipeline` loop "
                     f"({p['naive_rows']:,} rows; RSS {p['naive_peak_rss_mib']:.0f} MiB) | **{p['speedup']:.1f}×** | |")
        if "big_rows" in p:
            lines.append(f"| 11b | `finetune predict` peak RSS, {p['big_rows']:,} vs {p['small_rows']:,} rows "
                         f"({p['memory_model']}, {p['big_rows_per_s']:.0f} rows/s) | {p['big_peak_rss_mib']:.0f} MiB | "
                         f"{p['small_peak_rss_mib']:.0f} MiB | {p['rss_ratio_big_vs_small']:.2f}× | ≈ 1× |")
    if "serve" in r and "runs" in r["serve"]:
        v = r["serve"]
        one = next((x for x in v["runs"] if x["connections"] == 1), None)
        for x, tag in zip(v["runs"], "abc"):
            ratio = f"{x['requests_per_s'] / one['requests_per_s']:.2f}× 1 connection" if one and x is not one else ""
            target = "p99 ≤ 50 ms, 0 errors, ≥ 2×" if x["connections"] == 16 else ""
            lines.append(f"| 12{tag} | `finetune serve` (no options: {v['workers']} workers), {x['connections']} "
                         f"connection(s) of 1 text/request, {v['client']}, median of {v['repeats']} × {v['seconds']} s | "
                         f"{x['requests_per_s']:,.0f} req/s, p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms, "
                         f"{x['errors']} errors | | {ratio} | {target} |")
    if "lineage" in r:
        g = r["lineage"]
        lines.append(f"| 13 | `lineage trace` / `model` / `diff` of two commits ({' vs '.join(g['diff_revisions'])}), wall time | "
                     f"{g['trace_seconds']:.1f} s / {g['model_seconds']:.1f} s / {g['diff_seconds']:.1f} s | | | "
                     "a few s / a few s / < 60 s |")
    if "gpu" in r:
        g = r["gpu"]
        if "skipped" in g:
            lines.append(f"| 7 | GPU: bf16 vs fp32 train, hf back-translation GPU vs CPU | not measured: {g['skipped']} | | | |")
        else:
            lines.append(f"| 7 | GPU ({g['device']}) train samples/s bf16 vs fp32 | {g['bf16']['samples_per_s']:.0f} | "
                         f"{g['fp32']['samples_per_s']:.0f} | **{g['bf16_vs_fp32']:.2f}×** | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these figures")
    ap.add_argument("--full-repro", action="store_true", help="also time a forced full dvc repro (+10 min)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "results.json"
    results = json.loads(previous.read_text()) if previous.is_file() and args.only else {}
    results["machine"] = machine()
    failed = []
    for name in [*(args.only or list(BENCHES)), *(["full_repro"] if args.full_repro else [])]:
        print(f"bench: {name} …", flush=True)
        m = results["machine"]
        try:
            results[name] = {**(bench_full_repro if name == "full_repro" else BENCHES[name])(),
                             "_measured": f"{m['date']}, {m['cores']} cores ({m['cpu']})"}
        except Exception:  # one broken figure must not cost the others (minutes each): say which, go on
            import traceback

            traceback.print_exc()
            failed.append(name)
            results.pop(name, None)
            continue
        print(json.dumps(results[name], indent=1), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")  # kept figure by figure
        (out / "RESULTS.md").write_text(markdown(results))
    print(markdown(results))
    if failed:
        raise SystemExit(f"bench: failed: {', '.join(failed)} (tracebacks above)")


if __name__ == "__main__":
    main()
