"""dvc.yaml deps must follow the code: a stage that imports a module it does not depend on is not rerun when that
module changes, and DVC then serves a stale cached output."""
from __future__ import annotations

import ast
import re

import yaml
from conftest import ROOT


def pipeline_imports(module: str) -> set[str]:
    """Every pipeline.* module `module` imports, directly or through others (function-level imports included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((ROOT / "pipeline" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
                todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")]
    return seen


def test_every_stage_depends_on_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        m = re.search(r"-m pipeline\.(\w+)", stage["cmd"])
        assert m, f"stage {name}: command does not run a pipeline module"
        needed = {f"pipeline/{mod}.py" for mod in pipeline_imports(m.group(1))}
        missing = sorted(needed - set(stage["deps"]))
        assert not missing, f"dvc.yaml stage {name!r} imports {missing} but does not list them in deps"
        checked += 1
    assert checked >= 10


def test_result_changing_params_are_tracked_per_key():
    """train/distill are tracked key by key: everything that changes the model, and not the launcher, resume or
    thread count, so switching to torchrun or changing threads never invalidates a cached model."""
    from pipeline.params import RUN_ONLY_KEYS, DistillParams, TrainParams

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    untracked = RUN_ONLY_KEYS
    for stage, cls in (("train", TrainParams), ("distill", DistillParams)):
        tracked = {p.split(".", 1)[1] for p in stages[stage]["params"] if isinstance(p, str) and "." in p}
        assert tracked == set(cls.model_fields) - untracked, stage
        assert "seed" in stages[stage]["params"]


def test_no_stage_imports_another_stage():
    """What two stages share lives in shared machinery; a stage importing a stage drags its deps along."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    modules = {re.search(r"-m pipeline\.(\w+)", s["cmd"]).group(1) for s in stages.values()}
    for m in modules:
        others = (pipeline_imports(m) - {m}) & modules
        assert not others, f"stage module {m} imports stage module(s) {sorted(others)}"
