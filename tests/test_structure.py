"""The house rules, checked on the source: one definition of each shared thing, short modules and functions,
commands that do not import commands or private names, no branch on a model-kind string, and no path that
dvc.yaml declares written again in a command."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
MODULES = sorted(PIPELINE.rglob("*.py"))
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _definitions(pattern: str) -> list[str]:
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and re.fullmatch(pattern, node.name):
                found.append(f"{_name(path)}.{node.name}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_short(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines; split it by concern"


def test_functions_are_short():
    long = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{_name(path)}.{node.name}: {size} lines")
    assert not long, long


@pytest.mark.parametrize("pattern, home", [
    (r"_?macro_f1", "pipeline.core.metrics.macro_f1"),
    (r"_?softmax", "pipeline.core.metrics.softmax"),
    (r"_?(label_map|label_index|label_to_id|label_ids)", "pipeline.core.metrics.label_index"),
    (r"_?(unseen_labels|check_unseen_labels)", "pipeline.core.metrics.unseen_labels"),
])
def test_one_definition_of_each_shared_computation(pattern, home):
    assert _definitions(pattern) == [home]


def test_label_map_is_built_once():
    pattern = re.compile(r"\{(\w+): (\w+) for \2, \1 in enumerate\((\w*(label|name|class)\w*)")
    hits = [f"{_name(p)}:{i}" for p in MODULES
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == ["pipeline.core.metrics:24"], hits


def test_lineage_file_name_is_written_once():
    hits = [_name(p) for p in MODULES if '"lineage.json"' in p.read_text(encoding="utf-8")]
    assert hits == ["pipeline.core.io"], hits


def test_no_branch_on_a_model_kind_string():
    # A second task would multiply every such switch; each kind is a class behind PackagedModel instead.
    kinds = "onnx|baseline|transformers|torch"
    pattern = re.compile(rf"""(?<!for )\bkind\w*\s*(==|!=|in)\s|(==|!=)\s*["']({kinds})["']""")
    hits = [f"{_name(p)}:{i}" for p in MODULES
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def _imports(path: Path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_no_command_imports_another_command_and_nobody_imports_a_private_name():
    bad = []
    for path in MODULES:
        is_command = "commands" in path.parts and path.name not in ("cli.py", "__init__.py")
        for module, names in _imports(path):
            if is_command and module.startswith("pipeline.commands") and module != "pipeline.commands":
                bad.append(f"{_name(path)} imports {module}")
            bad += [f"{_name(path)} imports {module}.{n}" for n in names if n.startswith("_") and n != "__future__"]
    assert not bad, bad


def _declared_paths() -> set[str]:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    found = set()
    for stage in dvc["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            found.add(re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(params[m[1]][m[2]]), str(path)))
    return {p for p in found if "/" in p}


def test_no_path_that_dvc_yaml_declares_is_written_in_a_command():
    declared = _declared_paths()
    assert len(declared) > 10, declared
    hits = []
    for path in (PIPELINE / "commands").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        hits += [f"{_name(path)}: {p}" for p in declared if f'"{p}' in text or f"'{p}" in text]
    assert not hits, hits


def test_no_stage_or_command_branches_on_the_task():
    # What differs between tasks is the task object's (pipeline/core/tasks.py); a stage that compared the name
    # would grow a branch per task, as the model-kind switch did.
    names = "|".join(re.escape(n) for n in __import__("pipeline.core.tasks", fromlist=["TASKS"]).TASKS)
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*[\[(]?\s*["']({names}|token)["']|\.task\s*(==|!=|\bin\b)""")
    hits = [f"{_name(p)}:{i}" for p in MODULES if {"stages", "commands"} & set(p.parts)
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
