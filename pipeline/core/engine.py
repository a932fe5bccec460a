"""Batch inference on Ray Data: a model over every row of a large table, on a cluster's actor pool.

The stages and commands that run a model over all rows (teacher_logits, evaluate, predict) score in-process by
default. With `inference.engine: ray` (or `--engine ray`) they hand the same work to Ray Data: the batches are
formed here exactly as the in-process path forms them (texts sorted by the length the model reads, cut into
`batch_size` rows), each batch goes whole to one actor of a pool (`map_batches` with a callable class, one model
load per actor), and the rows come back to their places. Same batches, same model calls: the outputs are
byte-identical to the in-process path (tests/commands/test_deploy.py checks it on a two-worker local cluster).

Without an address, Ray starts an embedded cluster on this machine for the run and stops it after (nothing to
start by hand, `dvc repro` unchanged); `address` (`auto`, or `ray://host:10001`) joins a running cluster, whose
workers must see the model folder at the same path (a shared file system, or the repository checked out on each
node). Why Ray Data and not Dask or Spark: docs/design.md.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXTRA_HINT = "`pip install -e '.[distributed]'` (Ray Data) to use inference.engine: ray"


def engine_for(p: Any) -> "RayEngine | None":
    """The engine `inference` params ask for: a RayEngine for `engine: ray`, None (in-process) for `local`."""
    if p.engine == "local":
        return None
    return RayEngine(p.address, p.workers, p.gpus_per_worker)


class BatchScorer:
    """A Ray Data actor: one model load, then each call scores whole pre-formed batches."""

    def __init__(self, folder: str, method: str, threads: int) -> None:
        from pipeline.core.scoring import open_model

        self.scorer = open_model(folder, threads=threads, device="auto")
        self.method = method

    def __call__(self, batch: dict) -> dict:
        rows, out = [], []
        for idx, texts in zip(batch["rows"], batch["texts"]):
            texts = list(texts)
            fn = self.scorer.logits if self.method == "logits" else self.scorer.proba
            out.append(np.asarray(fn(texts, batch_size=len(texts))))
            rows.append(np.asarray(idx))
        return {"row": np.concatenate(rows), "values": np.concatenate(out)}


class RayEngine:
    """`run(scorer, texts, batch_size, method)`: `scorer.<method>` over `texts` on a Ray actor pool."""

    def __init__(self, address: str | None = None, workers: int = 0, gpus_per_worker: float = 0) -> None:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as e:
            from pipeline.core.io import KnownError

            raise KnownError(f"Ray Data is not installed ({e.name}): {EXTRA_HINT}") from None
        self.address, self.workers, self.gpus = address, workers, gpus_per_worker
        self._started = False

    def _init(self) -> None:
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # our own log line says what ran; Ray's bars flood a stage's log
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            # Embedded: a cluster of this machine's cores for this process; workers import this checkout's code.
            ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.getcwd(), "TOKENIZERS_PARALLELISM": "false"}})
        self._started = True

    def run(self, scorer: Any, texts: list[str], batch_size: int, method: str = "logits") -> np.ndarray:
        import ray
        import ray.data

        from pipeline.core.modeling import length_batches

        self._init()
        batches = length_batches(scorer.read(texts), batch_size)
        items = [{"rows": b.tolist(), "texts": [texts[i] for i in b]} for b in batches]
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * workers) or 1)
        # Each actor takes whole pre-formed batches (Ray's batch_size counts items here, not texts).
        scored = ds.map_batches(BatchScorer, batch_size=1, concurrency=min(workers, len(items)) or 1,
                                num_cpus=1, num_gpus=self.gpus or None, batch_format="numpy",
                                fn_constructor_kwargs={"folder": str(scorer.folder), "method": method,
                                                       "threads": 1})
        out = None
        for part in scored.iter_batches(batch_size=None, batch_format="numpy"):
            values = np.asarray(part["values"])
            if out is None:
                out = np.zeros((len(texts), values.shape[1]), dtype=values.dtype)
            out[np.asarray(part["row"])] = values
        log.info("ray: %d rows in %d batches on %d workers", len(texts), len(batches), workers)
        return out if out is not None else np.zeros((0, len(scorer.label_names)), dtype=np.float32)

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
