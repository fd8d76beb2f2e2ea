"""Hook implementations: what this plugin adds to mlplatform."""

from __future__ import annotations

from mlplatform import hookimpl
from mlplatform.artifacts import atomic_write_text
from mlplatform.jobs import job_output_dir
from mlplatform.plugins import get_registry

from . import greetings


def run_example_job(cfg):
    """Greet `who` with the greeting chosen by `greeting=NAME`, and save it in the run dir."""
    greet = get_registry().get("greeting", cfg.greeting.name)
    text = greet(cfg.who)
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


@hookimpl
def register_components(registry):
    # A kind of this plugin's own: "greeting".
    registry.add("greeting", "plain", greetings.plain, description="Hello, name!")
    registry.add("greeting", "shout", greetings.shout, description="HELLO, NAME!")
