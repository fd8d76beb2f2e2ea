"""Compile backends. Each is registered by name (kind "backend"); a plugin can add its own by
subclassing `Backend` and registering it in `register_compile_backends`."""

from .base import Backend, CompileRequest

__all__ = ["Backend", "CompileRequest"]
