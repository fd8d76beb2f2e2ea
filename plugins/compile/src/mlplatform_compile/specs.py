"""Input specifications: named inputs whose dimensions are fixed or (min, max) ranges.

One description of the inputs drives everything that depends on shapes: torch.export's
`dynamic_shapes`, torch.compile's `mark_dynamic`, the example and verification inputs, the
artifact key, and the checks `load_module` runs before AOTInductor (which checks nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlplatform.api import ConfigError


@dataclass(frozen=True)
class Dim:
    """One dimension: `multiple * k` for k in [min/multiple, max/multiple]; static when min == max.

    Dimensions with the same name are the same symbol across inputs (e.g. the batch).
    """

    name: str
    min: int
    max: int
    multiple: int = 1

    def __post_init__(self):
        if self.min < 1 or self.max < self.min:
            raise ConfigError(
                f"range for {self.name!r} is ({self.min}, {self.max}); it needs 1 <= min <= max",
                f"give {self.name} as an int or a [min, max] pair with min <= max",
            )
        if self.min % self.multiple or self.max % self.multiple:
            raise ConfigError(
                f"range for {self.name!r} is ({self.min}, {self.max}) but this model needs "
                f"multiples of {self.multiple}",
                f"round both ends of the range to multiples of {self.multiple}",
            )

    @property
    def static(self) -> bool:
        return self.min == self.max

    def contains(self, size: int) -> bool:
        return self.min <= size <= self.max and size % self.multiple == 0

    def clamp(self, size: int) -> int:
        """The allowed size nearest to `size` (rounded down to the multiple)."""
        size = max(self.min, min(self.max, size))
        return max(self.min, size - size % self.multiple)

    def describe(self) -> str:
        text = str(self.min) if self.static else f"{self.min}..{self.max}"
        return text + (
            f" (multiple of {self.multiple})" if self.multiple > 1 and not self.static else ""
        )


@dataclass(frozen=True)
class InputSpec:
    """A named input: dtype name ('float' means the build dtype) and per-axis int or Dim."""

    name: str
    shape: tuple[int | Dim, ...]
    dtype: str = "float"
    low: int = 0  # integer inputs (token ids) are drawn from [low, high)
    high: int = 2

    def dims(self) -> Iterable[tuple[int, Dim]]:
        for axis, size in enumerate(self.shape):
            if isinstance(size, Dim):
                yield axis, size


@dataclass
class ShapeSet:
    """Concrete sizes for every named dimension, with a label saying why it is checked."""

    label: str
    sizes: dict[str, int] = field(default_factory=dict)


def as_range(value: Any, name: str) -> tuple[int, int]:
    """An int, or a [min, max] pair, as (min, max)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        try:
            low, high = int(value[0]), int(value[1])
        except (TypeError, ValueError):
            pass
        else:
            if low > high:
                raise ConfigError(
                    f"{name} range {list(value)} has min > max", f"write {name}: [{high}, {low}]"
                )
            return low, high
    raise ConfigError(
        f"{name} must be an int or a [min, max] pair, got {value!r}",
        f"e.g. build_kwargs.{name}=64 or build_kwargs.{name}=[64,128]",
    )


def pixel_dim(name: str, pixels: tuple[int, int], scale: int, multiple: int = 1) -> Dim:
    """A spatial dim given in pixels, expressed in the model's units (latents: pixels / scale)."""
    low, high = pixels
    if scale < 1 or multiple < 1:
        raise ConfigError(
            f"{name}: scale factor {scale} and multiple {multiple} must be at least 1",
            "check the builder's scale settings (e.g. build_kwargs.vae_scale_factor)",
        )
    if low % scale or high % scale:
        raise ConfigError(
            f"resolution range ({low}, {high}) is not divisible by the model's scale factor {scale}",
            f"use pixel sizes that are multiples of {scale * multiple}",
        )
    return Dim(name, low // scale, high // scale, multiple)


def all_dims(specs: Sequence[InputSpec]) -> dict[str, Dim]:
    dims: dict[str, Dim] = {}
    for spec in specs:
        for _axis, dim in spec.dims():
            if dims.setdefault(dim.name, dim) != dim:
                raise ConfigError(f"dimension {dim.name!r} is declared twice with different ranges")
    return dims


def export_dynamic_shapes(specs: Sequence[InputSpec]) -> dict[str, dict[int, Any]]:
    """torch.export `dynamic_shapes` for a forward taking the inputs by these names.

    A static Dim becomes a plain int (no symbol); a multiple becomes `multiple * Dim(...)`, the
    form torch.export accepts for sizes like encoder pixels that must be multiples of 8.
    """
    from torch.export import Dim as TorchDim

    symbols: dict[str, Any] = {}
    result: dict[str, dict[int, Any]] = {}
    for spec in specs:
        axes: dict[int, Any] = {}
        for axis, dim in spec.dims():
            if dim.static:
                continue
            if dim.name not in symbols:
                base = TorchDim(
                    f"{dim.name}_k" if dim.multiple > 1 else dim.name,
                    min=dim.min // dim.multiple,
                    max=dim.max // dim.multiple,
                )
                symbols[dim.name] = dim.multiple * base if dim.multiple > 1 else base
            axes[axis] = symbols[dim.name]
        result[spec.name] = axes or None
    return result


def example_sizes(specs: Sequence[InputSpec]) -> dict[str, int]:
    """Sizes for the export example: batch >= 2 and height != width, so torch.export neither
    specialises the batch to 1 nor adds an h == w guard."""
    dims = all_dims(specs)
    sizes = {name: dim.clamp(max(2, dim.min)) for name, dim in dims.items()}
    return _break_ties(dims, sizes)


def _break_ties(dims: Mapping[str, Dim], sizes: dict[str, int]) -> dict[str, int]:
    """Nudge equal dynamic sizes apart (h == w would otherwise be baked in as a guard)."""
    seen: dict[int, str] = {}
    for name in sorted(dims):
        dim = dims[name]
        if dim.static:
            continue
        size = sizes[name]
        while size in seen:
            step = dim.multiple
            if dim.contains(size + step):
                size += step
            elif dim.contains(size - step):
                size -= step
            else:
                break
            if size not in seen:
                break
        sizes[name] = size
        seen.setdefault(size, name)
    return sizes


def benchmark_sizes(
    specs: Sequence[InputSpec], wanted: Mapping[str, int] | None = None, what: str = "the build"
) -> dict[str, int]:
    """The shape a package is timed at: `wanted` ({dim: size}, job.benchmark_shape) where these
    specs hold it, else the typical one: batch at its minimum (inference serves one request at a
    time), every other dim at the middle of its range."""
    dims = all_dims(specs)
    typical = {
        name: dim.min if name == "batch" else dim.clamp((dim.min + dim.max) // 2)
        for name, dim in dims.items()
    }
    if not wanted:
        return typical
    unknown = sorted(set(wanted) - set(dims))
    if unknown:
        raise ConfigError(
            f"job.benchmark_shape names {unknown}, which {what} does not have",
            f"use only: {', '.join(sorted(dims)) or '(no dynamic dims)'}",
        )
    sizes = {**typical, **wanted}
    return sizes if all(dims[n].contains(v) for n, v in sizes.items()) else typical


def check_benchmark_shape(specs: Sequence[InputSpec], wanted: Mapping[str, int]) -> None:
    """job.benchmark_shape must lie inside the build range (a profile may not hold it)."""
    dims = all_dims(specs)
    benchmark_sizes(specs, wanted)  # unknown names
    outside = [f"{n}={v} (range {dims[n].describe()})" for n, v in wanted.items()
               if not dims[n].contains(v)]
    if outside:
        raise ConfigError(
            f"job.benchmark_shape is outside the build range: {', '.join(outside)}",
            "give sizes inside the range, in the model's input units (latents for the VAE decoder)",
        )


def verification_sets(
    specs: Sequence[InputSpec], spatial: Sequence[str] = ("height", "width")
) -> list[ShapeSet]:
    """Shapes every build is checked at: min, max, one non-square, and the export example."""
    dims = all_dims(specs)
    sets = [
        ShapeSet("min", {n: d.min for n, d in dims.items()}),
        ShapeSet("max", {n: d.max for n, d in dims.items()}),
    ]
    h, w = spatial
    if h in dims and w in dims:
        nonsquare = {n: d.clamp((d.min + d.max) // 2) for n, d in dims.items()}
        nonsquare[h] = dims[h].min
        nonsquare[w] = dims[w].max
        if nonsquare[h] == nonsquare[w]:  # static square spatial dims: nothing else to check
            nonsquare[w] = dims[w].clamp(dims[w].max)
        sets.append(ShapeSet("non_square", nonsquare))
    sets.append(ShapeSet("example", example_sizes(specs)))
    unique: list[ShapeSet] = sets[:2]  # min and max are always listed, even when equal
    for s in sets[2:]:
        if s.label == "example" or all(s.sizes != u.sizes for u in unique):
            unique.append(s)
    return unique


def concrete_shape(spec: InputSpec, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sizes[s.name] if isinstance(s, Dim) else s for s in spec.shape)


def specs_to_json(specs: Sequence[InputSpec]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        out.append(
            {
                "name": spec.name,
                "dtype": spec.dtype,
                "low": spec.low,
                "high": spec.high,
                "shape": [asdict(s) if isinstance(s, Dim) else s for s in spec.shape],
            }
        )
    return out


def specs_from_json(data: Sequence[Mapping[str, Any]]) -> list[InputSpec]:
    return [
        InputSpec(
            name=item["name"],
            dtype=item["dtype"],
            low=item.get("low", 0),
            high=item.get("high", 2),
            shape=tuple(Dim(**s) if isinstance(s, Mapping) else int(s) for s in item["shape"]),
        )
        for item in data
    ]
