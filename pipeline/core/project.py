"""The project as dvc.yaml describes it, at one revision: its paths, its row tables, its models and its outputs.

dvc.yaml is the single source of paths: a stage's `--name path` arguments say where it reads and writes, so
every command that needs a stage's file (lineage, ingest, monitor, kfold, serve, tune) asks `stage_paths` rather
than writing the path again. Old revisions (git revisions or `dvc exp` names) are read through `dvc.api` from the
DVC cache or remote, without a checkout; sha None is the workspace.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pipeline.core.io import KnownError
from pipeline.core.names import PACKAGED

# Per stage, the arguments of its command that name row tables: (argument, role).
TABLES = {
    "clean": [("output", "kept"), ("dropped", "dropped")],
    "audit": [("output", "kept"), ("dropped", "dropped"), ("issues", "issues")],
    "augment": [("output", "kept"), ("dropped", "dropped")],
    "rebalance": [("output", "kept"), ("dropped", "dropped")],
    "split": [("train", "train"), ("val", "val"), ("test", "test"), ("dropped", "dropped")],
    "evaluate": [("predictions", "predictions")],
}
class ProjectError(KnownError):
    """An unknown id, revision, or an output that is not in the cache: one line, naming it."""


def resolve_rev(rev: str | None, root: Path) -> str | None:
    """A git revision or a `dvc exp` name -> a commit sha (None = the workspace)."""
    if rev is None:
        return None
    git = ["git", "-C", str(root)]
    out = subprocess.run([*git, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True,
                         text=True)
    if out.returncode == 0:
        return out.stdout.strip()
    refs = subprocess.run([*git, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                          capture_output=True, text=True).stdout.split("\n")
    for line in refs:
        if line and line.split()[0].rsplit("/", 1)[-1] == rev:
            return line.split()[1]
    raise ProjectError(f"{rev}: not a git revision nor a `dvc exp` name in {root}")


@dataclass
class Revision:
    """The pipeline's outputs at one revision (sha None = the workspace)."""

    root: Path
    sha: str | None
    label: str
    _cache: dict = field(default_factory=dict)

    def read_bytes(self, path: str) -> bytes:
        if self.sha is None:
            p = self.root / path
            if not p.is_file():
                raise ProjectError(f"{path}: not in the workspace (run `dvc repro`, or `dvc pull`)")
            return p.read_bytes()
        import dvc.api
        from dvc.exceptions import DvcException

        try:
            with dvc.api.open(path, repo=str(self.root), rev=self.sha, mode="rb") as f:
                return f.read()
        except (DvcException, FileNotFoundError) as e:
            raise ProjectError(f"{path} at {self.label}: not in the DVC cache or remote ({type(e).__name__}); "
                               f"`dvc fetch` that revision, or `dvc repro` it") from None

    def text(self, path: str) -> str:
        if self.sha is None:
            return (self.root / path).read_text()
        out = subprocess.run(["git", "-C", str(self.root), "show", f"{self.sha}:{path}"], capture_output=True,
                             text=True)
        if out.returncode:
            raise ProjectError(f"{path}: not in git at {self.label}")
        return out.stdout

    def dvc_yaml(self) -> dict:
        if "dvc.yaml" not in self._cache:
            self._cache["dvc.yaml"] = yaml.safe_load(self.text("dvc.yaml"))
        return self._cache["dvc.yaml"]

    def vars(self) -> dict[str, str]:
        """dvc.yaml's `vars` (the raw and feedback file paths)."""
        return {k: str(x) for v in self.dvc_yaml().get("vars", []) if isinstance(v, dict) for k, x in v.items()}

    def raw_path(self) -> str:
        if "raw" not in self.vars():
            raise ProjectError("dvc.yaml has no `raw` var")
        return self.vars()["raw"]

    def feedback_path(self) -> str:
        """dvc.yaml's `feedback` var: the labelled rows `ingest` appends and `clean` reads after the raw file."""
        if "feedback" not in self.vars():
            raise ProjectError("dvc.yaml has no `feedback` var")
        return self.vars()["feedback"]

    def feedback(self) -> pd.DataFrame | None:
        """The feedback file at this revision (None when it has none)."""
        if "feedback" not in self._cache:
            try:
                text = self.text(self.feedback_path())
            except (ProjectError, FileNotFoundError):
                text = ""
            self._cache["feedback"] = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                                  na_values=[""]) if text.strip() else None
        return self._cache["feedback"]

    def stage_paths(self, stage: str) -> dict[str, str]:
        """A stage's `--name path` arguments, from its cmd in dvc.yaml (the single source of paths)."""
        st = self.dvc_yaml()["stages"].get(stage)
        if st is None:
            return {}
        cmd = str(st["cmd"])
        for name, value in self.vars().items():
            cmd = cmd.replace("${" + name + "}", value)
        words = cmd.split()
        return {w[2:]: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


    def path(self, stage: str, argument: str) -> str:
        """One of a stage's `--name path` arguments; an error naming both when dvc.yaml has no such argument."""
        paths = self.stage_paths(stage)
        if argument not in paths:
            raise ProjectError(f"dvc.yaml: stage {stage!r} has no --{argument} argument")
        return paths[argument]

    def packaged(self, name: str) -> Path:
        """The folder evaluate packages model `name` into (models/<name>, or its PACKAGED folder name)."""
        return self.root / self.path("evaluate", "models_dir") / PACKAGED.get(name, name)

    def table(self, stage: str, role: str) -> pd.DataFrame | None:
        key = (stage, role)
        if key not in self._cache:
            arg = dict((r, a) for a, r in TABLES[stage]).get(role)
            path = self.stage_paths(stage).get(arg or "")
            self._cache[key] = None if path is None else pd.read_parquet(io.BytesIO(self.read_bytes(path)))
        return self._cache[key]

    def json(self, path: str) -> dict | None:
        try:
            return json.loads(self.read_bytes(path))
        except ProjectError:
            return None


def open_revision(rev: str | None, root: Path) -> Revision:
    return Revision(root, resolve_rev(rev, root), rev or "workspace")


def workspace(root: Path = Path(".")) -> Revision:
    """The project as it is on disk."""
    return Revision(root, None, "workspace")


def run_dvc(*args: str, cwd: Path) -> str:
    """`dvc ARGS` in `cwd` with this interpreter's dvc; its stdout, or an error with the tail of what it said."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise ProjectError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return proc.stdout


def packaged_model(name: str, root: Path = Path(".")) -> Path:
    """The folder dvc.yaml's evaluate stage packages model `name` into: a command's default --model."""
    try:
        return workspace(root).packaged(name)
    except FileNotFoundError:
        raise ProjectError(f"no dvc.yaml in {root.resolve()}: pass the model folder") from None
