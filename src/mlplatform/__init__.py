"""mlplatform: one plugin registry and one Hydra configuration for four kinds of ML work.

The public API for plugins is `mlplatform.api` (registry lookup, typed configs, device and dtype
policy, model sources, artifacts, the run dir, errors); this package re-exports its hook marker
and errors. Everything else is internal. Importing either does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ArtifactError,
    ConfigError,
    DeviceError,
    MLPlatformError,
    ModelSourceError,
    PluginError,
    UnknownNameError,
)
from .hookspecs import hookimpl  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "MLPlatformError",
    "ConfigError",
    "UnknownNameError",
    "PluginError",
    "DeviceError",
    "ModelSourceError",
    "ArtifactError",
]
