"""CPU throughput and latency of several models, timed interleaved in one process (teacher, student, teacher, …),
so their ratios are fair on a noisy shared machine even when absolute figures drift."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from pipeline.core.params import EvaluateParams

ROUNDS = 3


def measure_speed(predictors: dict[str, Callable[[list[str]], Any]], texts: list[str], p: EvaluateParams) -> dict:
    """Throughput (samples/s, batch `p.batch_size`) and median latency (ms, batch 1), interleaved per round.

    Every model runs with denormal floats flushed to zero, as the ONNX models set it anyway: torch and onnxruntime
    are timed in the same CPU mode."""
    from pipeline.core.onnx_model import flush_denormals

    flush_denormals()
    reps = (p.batch_size * p.throughput_batches + len(texts) - 1) // len(texts)
    pool = (texts * reps)[: p.batch_size * p.throughput_batches]
    batches = [pool[i:i + p.batch_size] for i in range(0, len(pool), p.batch_size)]
    singles = (texts * (p.latency_runs // len(texts) + 1))[: p.latency_runs]
    thr: dict[str, list[float]] = {k: [] for k in predictors}
    lat: dict[str, list[float]] = {k: [] for k in predictors}
    for fn in predictors.values():  # warm-up: first calls allocate and pick kernels
        fn(batches[0])
        fn(singles[:1])
    for _ in range(ROUNDS):
        for name, fn in predictors.items():
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            thr[name].append(len(pool) / (time.perf_counter() - t0))
            for s in singles[: max(1, len(singles) // ROUNDS)]:
                t0 = time.perf_counter()
                fn([s])
                lat[name].append((time.perf_counter() - t0) * 1000)
    return {name: {"cpu_samples_per_s_batch": round(statistics.median(thr[name]), 2),
                   "cpu_latency_ms_batch1": round(statistics.median(lat[name]), 3)} for name in predictors}
