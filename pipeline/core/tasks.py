"""What differs between tasks, one object per task; stages and commands call it and never compare task names.

The objects are imported here statically, not looked up with importlib: dvc.yaml's deps are derived from imports,
and a task module found at run time would be invisible to DVC (a change to it would not rerun the stages it
shapes). docs/design.md, "The task seam", lists every member and the stage that calls it.
"""
from __future__ import annotations

from typing import Any, Union

from pipeline.core.sequence_task import SequenceTask
from pipeline.core.token_task import TokenTask

Task = Union[SequenceTask, TokenTask]
TASKS = {"sequence": SequenceTask, "token": TokenTask}
__all__ = ["TASKS", "SequenceTask", "Task", "TokenTask", "task_for"]


def task_for(params: Any) -> Task:
    """The task params.yaml's `task` names (validated at load, so the name is one of TASKS), set up by its params."""
    return TASKS[params.task](params)
