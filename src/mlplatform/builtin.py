"""The core's own plugin: the `plugins` listing job and the `train` dispatcher.

Registered exactly like an external plugin, through the same hooks.
"""

from __future__ import annotations

from .hookspecs import hookimpl
from .jobs import run_plugins_job, run_train_job


@hookimpl
def register_jobs(registry):
    registry.add_job("plugins", run_plugins_job, "list installed plugins and what they registered")
    registry.add_job("train", run_train_job, "train with the trainer chosen by trainer=NAME")


@hookimpl
def register_config_groups(registry):
    from .schemas import PluginsJobConfig, TrainJobConfig

    registry.add_config_package("mlplatform.conf")
    registry.add_config_schema("job", "plugins", PluginsJobConfig)
    registry.add_config_schema("job", "train", TrainJobConfig)
