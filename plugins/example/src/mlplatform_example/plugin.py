"""Hook implementations: what this plugin adds to mlplatform.

It imports the core only through `mlplatform.api`, the public API for plugins.
"""

from __future__ import annotations

from mlplatform.api import (
    ConfigError,
    atomic_write_text,
    get_registry,
    hookimpl,
    job_output_dir,
    to_schema,
)

from . import greetings
from .schemas import ExampleJobConfig, GreetingConfig


def run_example_job(cfg):
    """Greet `job.who` with the greeting chosen by `greeting=NAME`, and save it in the run dir."""
    job: ExampleJobConfig = to_schema(cfg.job, "job")
    greeting: GreetingConfig = to_schema(cfg.greeting, "greeting")
    if job.repeat < 1:
        raise ConfigError(f"job.repeat is {job.repeat}; it must be at least 1", "pass job.repeat=1")
    greet = get_registry().get("greeting", greeting.name)
    text = "\n".join([greet(job.who)] * job.repeat)
    path = atomic_write_text(job_output_dir() / "greeting.txt", text + "\n")
    print(text)
    print(f"saved to {path}")
    return {"greeting": text, "path": str(path)}


@hookimpl
def register_jobs(registry):
    registry.add_job("example", run_example_job, "greet someone (the example plugin's job)")


@hookimpl
def register_config_groups(registry):
    registry.add_config_package("mlplatform_example.conf")
    # one schema per config option: the YAML names it first in its defaults list
    registry.add_config_schema("job", "example", ExampleJobConfig)
    # every greeting option has the same fields: one schema they all name
    registry.add_config_schema("greeting", "base", GreetingConfig)


@hookimpl
def register_components(registry):
    # A kind of this plugin's own: "greeting".
    registry.add("greeting", "plain", greetings.plain, description="Hello, name!")
    registry.add("greeting", "shout", greetings.shout, description="HELLO, NAME!")
