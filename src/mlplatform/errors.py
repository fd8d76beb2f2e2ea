"""Errors a user can act on.

Every error the platform raises for bad input says two things: what was wrong and how to fix it.
The CLI prints these without a traceback and exits with status 2.
"""

from __future__ import annotations


class MLPlatformError(Exception):
    """A problem with the user's input or environment, with the fix spelled out."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class ConfigError(MLPlatformError):
    """A malformed, missing or contradictory configuration value."""


class UnknownNameError(MLPlatformError):
    """A component, plugin or job name that nothing registered."""


class PluginError(MLPlatformError):
    """A plugin that failed to import, validate or register."""


class DeviceError(MLPlatformError):
    """A device or dtype request the machine cannot satisfy."""


class ModelSourceError(MLPlatformError):
    """A model that is neither a local directory nor reachable on the hub."""


class ArtifactError(MLPlatformError):
    """A missing, truncated, altered or mismatched artifact on disk."""
