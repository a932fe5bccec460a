"""What differs between tasks, one object per task; stages and commands call it and never compare task names.

The objects are imported here statically, not looked up with importlib: dvc.yaml's deps are derived from imports,
and a task module found at run time would be invisible to DVC (a change to it would not rerun the stages it
shapes). docs/design.md, "The task seam", lists every member and the stage that calls it.
"""
from __future__ import annotations

from pipeline.core.sequence_task import SequenceTask

TASKS = {"sequence": SequenceTask}
__all__ = ["TASKS", "SequenceTask", "task_for"]


def task_for(name: str) -> SequenceTask:
    """The task object params.yaml's `task` names (validated at load, so the name is one of TASKS)."""
    return TASKS[name]()
