"""Typed schemas of this plugin's config groups: Hydra rejects a wrong type or an unknown key in
job/example.yaml, greeting/*.yaml or on the command line before the job runs."""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.api import ComponentConfig, JobConfig


@dataclass
class ExampleJobConfig(JobConfig):
    # whom to greet (required: job.who=NAME)
    who: str = "???"
    # how many times to write the greeting
    repeat: int = 1


@dataclass
class GreetingConfig(ComponentConfig):
    """greeting=NAME: `name` is the registered greeting it dispatches to."""
