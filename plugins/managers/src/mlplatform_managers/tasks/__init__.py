"""Tasks for `job=infer task=NAME`: registered under registry kind `task`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mlplatform.api import ComponentConfig


@dataclass
class TaskContext:
    """What a task gets from the job: the manager, the chosen model, device policy, output dir."""

    manager: Any  # ModelManager
    model: str | None  # catalog name from model=NAME / model.name=NAME; None when not given
    device: str
    dtype: str
    seed: int
    output_dir: Path


class Task:
    """A `job=infer` task. Subclass, set the class attributes, implement run(ctx, options), and
    register an instance: `registry.add("task", task.name, task)`; ship its config option
    (task/NAME.yaml naming the schema) so `task=NAME` selects it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    schema: ClassVar[type] = ComponentConfig  # the options' dataclass
    model_types: ClassVar[tuple[str, ...]] = ()  # catalog types it accepts; () = needs no model

    def run(self, ctx: TaskContext, options: Any) -> dict[str, Any]:
        raise NotImplementedError
