"""Nothing executes from data, params or a shared cache."""
from __future__ import annotations

import pickle

import pytest

from pipeline.core.modeling import BASELINE_FILE, ModelError, load_baseline, tfidf_logreg


class Payload:
    """Runs a command when unpickled: what a crafted model file in a shared DVC cache or remote could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_baseline_round_trips_without_pickle(tmp_path):
    import skops.io as sio

    model = tfidf_logreg("word", 2, 1, 1000, True, 10.0, "balanced", 200, 0)
    model.fit(["good film", "bad film", "great plot", "awful acting"], ["pos", "neg", "pos", "neg"])
    sio.dump(model, tmp_path / BASELINE_FILE)
    assert list(load_baseline(tmp_path).predict(["good plot"])) == list(model.predict(["good plot"]))


def test_crafted_baseline_files_execute_nothing(tmp_path):
    import skops.io as sio

    marker = tmp_path / "pwned"
    # 1. A pickle/joblib payload where the old format lived is never read.
    (tmp_path / "model.joblib").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ModelError, match="no baseline model"):
        load_baseline(tmp_path)
    # 2. A skops file naming an untrusted type is refused before anything is built.
    sio.dump({"clf": Payload(str(marker))}, tmp_path / BASELINE_FILE)
    with pytest.raises(ModelError, match="refused or unreadable"):
        load_baseline(tmp_path)
    assert not marker.exists()


def test_launcher_is_an_argument_list_never_a_shell():
    import sys

    from pipeline.core.params import ParamsError
    from pipeline.core.training import launch_argv

    assert launch_argv("python", "pipeline.stages.train", ["--x", "1"]) is None
    argv = launch_argv("torchrun --nproc_per_node 2", "pipeline.stages.train", ["--train", "a b.parquet"])
    assert argv == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                    "pipeline.stages.train",
                    "--train", "a b.parquet"]
    assert launch_argv("accelerate launch --num_processes=2", "pipeline.stages.train", [])[:3] == [
        sys.executable, "-m", "accelerate.commands.launch"]
    for bad in ("touch x; python", "bash -c 'touch x'", "torchrun $(touch x)", "torchrun --a;b", "rm -rf /"):
        with pytest.raises(ParamsError, match="train.launcher"):
            launch_argv(bad, "pipeline.stages.train", [])


def test_no_stage_command_is_built_from_params():
    """dvc.yaml used to interpolate train.launcher into the stage's shell command: params must never reach a shell."""
    import re

    import yaml
    from conftest import ROOT

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = {k for v in spec["vars"] for k in v}  # dvc.yaml's own path vars, never params.yaml keys
    assert paths == {"raw", "feedback"}
    for name, stage in spec["stages"].items():
        assert set(re.findall(r"\$\{([^}]+)\}", stage["cmd"])) <= paths, (name, stage["cmd"])
