"""This plugin's errors: MLPlatformError subclasses, so the CLI prints problem and fix and exits 2."""

from __future__ import annotations

from mlplatform.api import ArtifactError, ConfigError, MLPlatformError, ModelSourceError


class CatalogError(ConfigError):
    """A catalog file that cannot be read or does not follow the schema."""


class DownloadError(ModelSourceError):
    """A file that could not be fetched (HTTP error, timeouts after every retry, no space)."""


class HashMismatchError(ArtifactError):
    """A file whose sha256 is not the catalog's (quarantined, never used)."""


class UnsafeModelError(MLPlatformError):
    """A file the safety policy refuses: unhashed, a pickle, or a path outside the models dir."""


class BudgetError(MLPlatformError):
    """A model that cannot fit in the device's memory budget."""


class InputImageError(ConfigError):
    """An input image that is missing or cannot be decoded."""


class LicenceError(ConfigError):
    """A model whose licence (e.g. non-commercial) the user has not accepted by name."""
