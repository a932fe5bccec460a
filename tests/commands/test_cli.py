"""The front door: `finetune <command>` reaches every user command, with global options anywhere."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT  # noqa: E402 - the repository root (tests/conftest.py)

from pipeline.commands.cli import COMMANDS, main, split_globals


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.commands.cli", *args], cwd=cwd, capture_output=True,
                          text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_help_names_every_command_and_each_command_has_its_own_help():
    out = run("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"    {name} " in out.stdout
        sub = run(name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: finetune {name}"), (name, sub.stderr)


def test_unknown_command_is_a_clear_error():
    out = run("trian")
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr and "check" in out.stderr


@pytest.mark.parametrize("argv, level, rest", [
    (["--log-level", "debug", "check"], "debug", ["check"]),
    (["check", "--params", "p.yaml", "-q"], "WARNING", ["check", "--params", "p.yaml"]),
    (["lineage", "--log-level=ERROR", "trace", "--json"], "ERROR", ["lineage", "trace", "--json"]),
])
def test_global_options_are_taken_before_or_after_the_command(argv, level, rest):
    found, left = split_globals(argv)
    assert found["log_level"] == level and left == rest


def test_bad_log_level_names_the_option():
    with pytest.raises(SystemExit, match="--log-level"):
        main(["--log-level", "loud", "check"])


def test_lineage_json_is_accepted_after_the_subcommand(tmp_path):
    # Where users type it: before, the subcommand's parser refused it ("unrecognized arguments").
    for argv in (["lineage", "model", "models/none", "--json", "--repo", str(tmp_path)],
                 ["lineage", "--json", "--repo", str(tmp_path), "model", "models/none"]):
        out = run(*argv)
        assert "unrecognized arguments" not in out.stderr and out.returncode == 1, out.stderr
        assert "models/none" in out.stderr


def test_check_through_the_front_door_reads_the_bundled_project():
    out = run("check", "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("0 error(s)") and "train.max_length auto reads" in out.stdout, out.stdout
