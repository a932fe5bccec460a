"""What every bench script shares: where the repository and the results are, the offline environment, the machine
a figure was measured on, and how a result is formatted and recorded (bench/results/<stem>.json and its .md)."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
# Benches run offline, as the pipeline's defaults do; tokenizers' own threads would fight the benches' processes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measured(m: dict) -> str:
    """The 'Measured <date> on <machine>' sentence every results file opens with."""
    return f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), torch {m['torch']}, device {m['device']}"


def fmt_ci(m: dict, digits: int = 3) -> str:
    """A metric_ci result as `value [low, high]`."""
    return f"{m['value']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def fmt_diff(c: dict, digits: int = 3, mark: str = " *") -> str:
    """A paired_comparison result as `+delta [low, high]`, marked where the CI excludes 0."""
    return (f"{c['delta']:+.{digits}f} [{c['ci_low']:+.{digits}f}, {c['ci_high']:+.{digits}f}]"
            + (mark if c["significant"] else ""))


def record(out: Path, stem: str, dataset: str, row: dict, markdown: Callable[[dict], str]) -> str:
    """Add one dataset's results to `out/<stem>.json` (earlier datasets kept), rewrite `out/<STEM>.md` from all of
    them with the machine, and return that Markdown."""
    path = Path(out) / f"{stem}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
    results["machine"] = machine()
    results["datasets"][dataset] = row
    path.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (Path(out) / f"{stem.upper()}.md").write_text(text)
    return text


def teacher_predictions(folder: Path, texts: list[str]) -> Any:
    """Predicted label ids of a trained model folder, reading texts as it was trained to (its lineage's max_length
    and truncation): the one way every bench scores a teacher it did not package."""
    from pipeline.core.scoring import open_model

    return open_model(folder).proba(texts).argmax(1)


def torch_predictor(folder: str | Path) -> Callable[[list[str]], Any]:
    """Batch -> logits of a transformers folder on CPU, as evaluate times it (a bench student may have no lineage:
    then it reads 128 tokens from the head)."""
    from pipeline.core.io import LINEAGE_FILE, read_lineage
    from pipeline.core.scoring import TorchModel

    folder = Path(folder)
    lineage = read_lineage(folder) if (folder / LINEAGE_FILE).is_file() else {}
    return TorchModel(folder, lineage).predictor()


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }
