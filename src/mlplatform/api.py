"""The public API for plugins: everything a plugin may use from the core, in one module.

A plugin imports `mlplatform.api` (and the `mlplatform` package's re-exports of it) and nothing
else of the core; a test fails when a plugin in this repository reaches past it. Names here are
kept stable; everything else under `mlplatform.` may change without notice. Importing this
module does not import torch.

- hooks:      hookimpl (the marker for register_* hooks)
- registry:   get_registry() -> Registry with .get(kind, name), .names(kind), .job(name); closest()
- errors:     MLPlatformError and its subclasses (the CLI prints them and exits with status 2)
- config:     schema dataclasses for config groups (JobConfig, ...) and the ConfigStore helpers
- device:     resolve_device, resolve_dtype, describe_device, device_fingerprint, cpu_isa
- sources:    resolve_model_source, hub_offline, read_json_file
- artifacts:  atomic writes, staged directories, per-artifact locks, manifests and their checks
- jobs:       job_output_dir (the Hydra run dir of the running job)
"""

from __future__ import annotations

from .artifacts import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    artifact_lock,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_manifest,
    remove_stale_staging,
    require_keys,
    sha256_file,
    staged_directory,
    storage_errors,
    verify_artifact,
    write_manifest,
)
from .device import cpu_isa, describe_device, device_fingerprint, resolve_device, resolve_dtype
from .errors import (
    ArtifactError,
    ConfigError,
    DeviceError,
    MLPlatformError,
    ModelSourceError,
    PluginError,
    UnknownNameError,
)
from .hookspecs import hookimpl
from .jobs import job_output_dir
from .plugins import get_registry
from .registry import closest
from .schemas import (
    SCHEMA_GROUP,
    ComponentConfig,
    CoreConfig,
    JobConfig,
    from_options,
    to_schema,
)
from .sources import hub_offline, read_json_file, resolve_model_source

__all__ = [
    # hooks and registry
    "hookimpl",
    "get_registry",
    "closest",
    # errors
    "MLPlatformError",
    "ConfigError",
    "UnknownNameError",
    "PluginError",
    "DeviceError",
    "ModelSourceError",
    "ArtifactError",
    # typed configs
    "SCHEMA_GROUP",
    "CoreConfig",
    "JobConfig",
    "ComponentConfig",
    "to_schema",
    "from_options",
    # device and dtype policy
    "resolve_device",
    "resolve_dtype",
    "describe_device",
    "device_fingerprint",
    "cpu_isa",
    # model sources
    "resolve_model_source",
    "hub_offline",
    "read_json_file",
    # artifacts
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "sha256_file",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "staged_directory",
    "artifact_lock",
    "remove_stale_staging",
    "storage_errors",
    "write_manifest",
    "read_manifest",
    "require_keys",
    "verify_artifact",
    # jobs
    "job_output_dir",
]
