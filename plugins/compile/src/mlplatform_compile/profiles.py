"""Shape profiles: extra compiled packages for common shapes, tried before the ranged build.

A ranged (dynamic-shape) package is general but can be slower than a package compiled for one
shape, where the compiler may specialise every loop. As TensorRT's optimization profiles and
AITemplate's dynamic profiles do, an artifact may hold several packages: one per profile (static
sizes or a narrow range, `build_kwargs.profiles`), plus the ranged package as the fallback that
covers the whole build range. `CompiledModule` runs the first profile whose ranges hold the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlplatform.api import ConfigError

from .naming import range_text, slug
from .specs import Dim, InputSpec, all_dims, as_range, specs_to_json

if TYPE_CHECKING:
    from .build import Build

PROFILES_DIR = "profiles"
FALLBACK = "fallback"
# build_kwargs a profile may set, and their short forms in a profile's name
PROFILE_FIELDS = {"batch_size": "b", "resolution": "r", "height": "h", "width": "w",
                  "sequence_length": "t"}


@dataclass(frozen=True)
class Profile:
    """One profile as built: its name, the build_kwargs it overrides and the specs they give."""

    name: str
    overrides: dict[str, Any]
    specs: list[InputSpec]

    @property
    def dims(self) -> dict[str, Dim]:
        return all_dims(self.specs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": self.overrides, "inputs": specs_to_json(self.specs)}


def profile_name(overrides: Mapping[str, Any]) -> str:
    """b1_r512, b1-2_h512_w768, t77: the overridden fields in the user's units."""
    parts = []
    for key, short in PROFILE_FIELDS.items():
        if overrides.get(key) is not None:
            low, high = as_range(overrides[key], key)
            parts.append(f"{short}{range_text(low, high)}")
    return slug("_".join(parts)) if parts else "all"


def overridden_kwargs(build_kwargs: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """The build's kwargs with a profile's fields applied; `resolution` sets both sides unless
    the profile also gives `height` / `width`."""
    kwargs = {**build_kwargs, "profiles": []}
    if overrides.get("resolution") is not None:
        kwargs["height"] = kwargs["width"] = None
    for key, value in overrides.items():
        if value is not None:
            kwargs[key] = value
    return kwargs


@contextlib.contextmanager
def _kwargs_swapped(builder: Build, kwargs: dict[str, Any]) -> Iterator[None]:
    """Builders read `self.build_kwargs` in input_specs; a profile's specs come from the same code."""
    saved = builder.build_kwargs
    builder.build_kwargs = kwargs
    try:
        yield
    finally:
        builder.build_kwargs = saved


def build_profiles(builder: Build, fallback: Sequence[InputSpec]) -> list[Profile]:
    """The profiles in `builder.build_kwargs["profiles"]`, each checked to lie inside the range."""
    raw = builder.build_kwargs.get("profiles") or []
    profiles: list[Profile] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        overrides = {k: v for k, v in dict(entry).items() if k != "name" and v is not None}
        if not overrides:
            raise ConfigError(
                f"build_kwargs.profiles[{index}] sets no sizes",
                f"give it some of: {', '.join(k for k in PROFILE_FIELDS if k in builder.build_kwargs)}",
            )
        unknown = [k for k in overrides if k not in builder.build_kwargs]
        if unknown:
            raise ConfigError(
                f"build_kwargs.profiles[{index}] sets {unknown}, which builder {builder.name!r} "
                "does not have",
                f"use only: {', '.join(k for k in PROFILE_FIELDS if k in builder.build_kwargs)}",
            )
        name = slug(entry.get("name") or profile_name(overrides))
        if name in seen or name == FALLBACK:
            raise ConfigError(
                f"build_kwargs.profiles[{index}] is named {name!r}, which is already taken",
                "give each profile a distinct name (profiles[i].name=...)",
            )
        seen.add(name)
        with _kwargs_swapped(builder, overridden_kwargs(builder.build_kwargs, overrides)):
            specs = builder.input_specs(builder.config())
        check_inside(f"profile {name!r} {overrides}", specs, fallback)
        profiles.append(Profile(name, {k: _plain(v) for k, v in overrides.items()}, specs))
    return profiles


def check_inside(what: str, specs: Sequence[InputSpec], fallback: Sequence[InputSpec]) -> None:
    """A profile must lie inside the build's range: the fallback is what refuses other shapes."""
    outer = all_dims(fallback)
    for dim_name, dim in all_dims(specs).items():
        limit = outer.get(dim_name)
        if limit is None or not (limit.contains(dim.min) and limit.contains(dim.max)):
            allowed = limit.describe() if limit else "fixed"
            raise ConfigError(
                f"{what}: {dim_name} {dim.describe()} (in the model's units) lies "
                f"outside the build range {allowed}",
                "widen build_kwargs (batch_size / resolution / height / width / "
                "sequence_length) to cover the profile, or narrow the profile",
            )


def matches(dims: Mapping[str, Dim], sizes: Mapping[str, int]) -> bool:
    return all(name in sizes and dim.contains(sizes[name]) for name, dim in dims.items())


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
