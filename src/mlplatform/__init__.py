"""mlplatform: one plugin registry and one Hydra configuration for four kinds of ML work.

The public API a plugin uses is re-exported here; everything else is internal. Importing this
package does not import torch.
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
