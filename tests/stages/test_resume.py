"""Fault tests for training (issue 9 items 8, 9, 16): kill -9 mid-run, a half-saved checkpoint, resume.

A resumed run must write the very same model folder (the bytes DVC hashes) as an uninterrupted one, and its
DVCLive curves must continue the earlier ones."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pipeline.core.io import write_table
from pipeline.stages.clean import clean
from pipeline.stages.split import split

pytestmark = pytest.mark.slow


def folder_hash(path: Path) -> str:
    h = hashlib.md5()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def job(tmp_path_factory, sms_slice, params):
    d = tmp_path_factory.mktemp("resume")
    parts = split(clean(sms_slice, params.clean, "sms.csv").kept, params.split, params.seed).splits
    for name in ("train", "val"):
        write_table(parts[name], d / f"{name}.parquet")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(max_steps=40, batch_size=16, max_length=48, early_stopping_patience=0, checkpoint_steps=10,
                        num_threads=1)
    (d / "params.yaml").write_text(yaml.safe_dump(raw))
    return d


def train_cmd(d: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.stages.train", "--params", str(d / "params.yaml"), "--train",
            str(d / "train.parquet"), "--val", str(d / "val.parquet"), "--output", str(d / name / "model"),
            "--checkpoints", str(d / name / "ckpt"), "--live", str(d / name / "live")]


def env() -> dict:
    return dict(os.environ, PIPELINE_LOG_LEVEL="WARNING", HF_HUB_OFFLINE="1")


def test_kill_and_resume_gives_the_same_model_folder(job):
    subprocess.run(train_cmd(job, "whole"), cwd=ROOT, env=env(), check=True, capture_output=True, timeout=600)
    reference = folder_hash(job / "whole" / "model")

    # Kill -9 once checkpoint-20 is complete (mid-epoch: 240 rows are 12 steps an epoch) ...
    proc = subprocess.Popen(train_cmd(job, "killed"), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = job / "killed" / "ckpt" / "checkpoint-20" / "trainer_state.json"
    deadline = time.time() + 600
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let it run on past the checkpoint (and log), as a real kill would
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.is_file(), "the run ended before its checkpoint at step 20"
    assert not (job / "killed" / "model").exists()  # nothing half-written where DVC looks
    # ... and leave a half-saved newer checkpoint behind, as a kill during a save does.
    half = job / "killed" / "ckpt" / "checkpoint-30"
    half.mkdir(exist_ok=True)
    (half / "config.json").write_text("{}")

    out = subprocess.run(train_cmd(job, "killed"), cwd=ROOT, env=dict(env(), PIPELINE_LOG_LEVEL="INFO"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checkpoint-30 is incomplete" in out.stderr and "resuming from" in out.stderr
    assert folder_hash(job / "killed" / "model") == reference

    # The curves continue: the same steps as the uninterrupted run, each once.
    def steps(name: str) -> list[int]:
        lines = (job / name / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]
        return [int(x.split("\t")[0]) for x in lines]

    assert steps("killed") == steps("whole") and len(steps("whole")) > 3
    live = job / "killed" / "live"
    for f in [live / "metrics.json", *sorted((live / "plots").rglob("*.tsv"))]:
        assert f.read_bytes() == (job / "whole" / f.relative_to(job / "killed")).read_bytes(), f
