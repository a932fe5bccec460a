"""The architecture as tests: dvc.yaml deps follow the code (a stage that imports a module it does not list is not
rerun when that module changes, and DVC then serves a stale output; one that lists a module it does not import
reruns for nothing), and imports flow one way: commands -> stages -> core, never back, never in a circle."""
from __future__ import annotations

import ast
import functools
import re

import yaml
from conftest import ROOT

LAYERS = {"core": 0, "stages": 1, "commands": 2}


def modules() -> list[str]:
    """Every module of the package, dotted below `pipeline` (e.g. `stages.clean`), packages' __init__ excluded."""
    return sorted(".".join(p.relative_to(ROOT / "pipeline").with_suffix("").parts)
                  for p in (ROOT / "pipeline").rglob("*.py") if p.name != "__init__.py")


@functools.lru_cache(maxsize=None)
def direct_imports(module: str) -> frozenset[str]:
    """The pipeline modules `module` imports itself (function-level imports included)."""
    tree = ast.parse((ROOT / "pipeline" / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found |= {n.removeprefix("pipeline.") for n in names if n.startswith("pipeline.")}
    return frozenset(found - {module})


def pipeline_imports(module: str) -> set[str]:
    """`module` and every pipeline module it imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += direct_imports(name)
    return seen


def path(module: str) -> str:
    return "pipeline/" + module.replace(".", "/") + ".py"


def stage_module(stage: dict) -> str:
    m = re.search(r"-m pipeline\.(stages\.\w+)", stage["cmd"])
    assert m, f"command does not run a pipeline stage module: {stage['cmd']}"
    return m.group(1)


def test_every_stage_depends_on_exactly_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        needed = {path(m) for m in pipeline_imports(stage_module(stage))}
        listed = {d for d in stage["deps"] if str(d).startswith("pipeline/")}
        assert listed == needed, (f"dvc.yaml stage {name!r}: missing {sorted(needed - listed)}, "
                                  f"not imported {sorted(listed - needed)}")


def test_the_graph_is_the_product_s_pipeline():
    """Each stage reads what the stage before it writes: the README's diagram, edge by edge, from dvc.yaml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    writer = {}
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            writer[str(next(iter(out)) if isinstance(out, dict) else out)] = name
    edges = {(writer[str(d)], name) for name, stage in stages.items() for d in stage["deps"] if str(d) in writer}
    chain = ["clean", "audit", "augment", "rebalance", "split", "train", "teacher_logits", "distill", "export",
             "evaluate"]
    expected = set(zip(chain, chain[1:])) | {("split", "baseline"), ("baseline", "evaluate"),
                                              ("baseline", "teacher_logits")}
    assert set(stages) == set(chain) | {"baseline"}
    assert expected <= edges, sorted(expected - edges)


def test_imports_flow_one_way_and_never_in_a_circle():
    """core imports only core; a stage imports only core (never a command or another stage); commands may use
    stages' pure functions. Every module sits in one of the three folders."""
    for m in modules():
        layer = m.split(".")[0]
        assert layer in LAYERS, f"pipeline/{m}.py: not in core/, stages/ or commands/"
        for dep in direct_imports(m):
            dep_layer = dep.split(".")[0]
            assert LAYERS[dep_layer] <= LAYERS[layer], f"{m} imports {dep}: against core <- stages <- commands"
            if layer == "stages":
                assert dep_layer == "core", f"stage {m} imports {dep}: a stage imports only core"
    # A circle: a module reachable from one of its own imports.
    for m in modules():
        for dep in direct_imports(m):
            assert m not in pipeline_imports(dep), f"import circle through {m} and {dep}"


def test_result_changing_params_are_tracked_per_key():
    """train/distill are tracked key by key: everything that changes the model, and not the launcher, resume or
    thread count, so switching to torchrun or changing threads never invalidates a cached model."""
    from pipeline.core.params import RUN_ONLY_KEYS, DistillParams, TrainParams

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    untracked = RUN_ONLY_KEYS
    for stage, cls in (("train", TrainParams), ("distill", DistillParams)):
        tracked = {p.split(".", 1)[1] for p in stages[stage]["params"]
                   if isinstance(p, str) and p.startswith(f"{stage}.")}
        assert tracked == set(cls.model_fields) - untracked, stage
        assert "seed" in stages[stage]["params"]


def test_training_curves_survive_a_resume_under_dvc_repro():
    """DVC deletes a stage's outputs before it runs it; the training curves must persist, or a teacher resumed
    from a checkpoint (killed mid-run, then `dvc repro`) kept only the points after the resume. A fresh run starts
    its curves afresh anyway (DVCLive clears them unless resuming)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("train", "distill"):
        plots = [p for p in stages[stage]["plots"] if isinstance(p, dict)]
        assert plots and all(flags.get("persist") is True for p in plots for flags in p.values()), stage
