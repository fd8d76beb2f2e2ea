"""Compiled-vs-eager parity: the error measure, the per-dtype tolerance a build must meet, and the
strict pairing of a runner's outputs with their names."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlplatform.api import ArtifactError, MLPlatformError

# relative error = max |compiled - eager| / max |eager|, per output
DEFAULT_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
INF = float("inf")


def tolerance_for(dtype: str, override: float | None = None) -> float:
    """The relative error a build in `dtype` must meet (the one table; benchmarks use it too)."""
    if override is not None:
        return float(override)
    return DEFAULT_TOLERANCE.get(dtype, 1e-4)


def compare(reference, candidate) -> dict[str, Any]:
    """Error figures for one output pair (computed in float64 on the reference's device).

    A non-finite value (NaN or +-inf) in either tensor, or different shapes, makes every error
    figure inf: NaN must never compare as "small". `reference_finite` and `finite` say which side
    was non-finite; `shape_mismatch` is set when the shapes differ.
    """
    ref = reference.detach().double()
    out = candidate.detach().to(ref.device).double()
    flags = {
        "reference_finite": bool(ref.isfinite().all().item()),
        "finite": bool(out.isfinite().all().item()),
    }
    if ref.shape != out.shape:
        return {"max_abs": INF, "mean_abs": INF, "rel": INF, "shape_mismatch": True, **flags}
    if not (flags["reference_finite"] and flags["finite"]):
        return {"max_abs": INF, "mean_abs": INF, "rel": INF, **flags}
    diff = (out - ref).abs()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    max_abs = diff.max().item() if diff.numel() else 0.0
    return {
        "max_abs": max_abs,
        "mean_abs": diff.mean().item() if diff.numel() else 0.0,
        "rel": max_abs / scale if scale > 0 else max_abs,
        **flags,
    }


def _failed(figures: Mapping[str, Any]) -> bool:
    try:
        rel = float(figures["rel"])
    except (KeyError, TypeError, ValueError):
        return True
    return (
        not math.isfinite(rel)
        or not figures.get("finite", True)
        or not figures.get("reference_finite", True)
        or bool(figures.get("shape_mismatch", False))
    )


def worst(parity: Mapping[str, Mapping[str, Any]]) -> float:
    """The largest relative error over every shape and output; inf when any figure is non-finite
    (NaN or inf `rel`), an output was non-finite on either side, or shapes did not match."""
    largest = 0.0
    for shape in parity.values():
        for figures in shape["outputs"].values():
            if _failed(figures):
                return INF
            largest = max(largest, float(figures["rel"]))
    return largest


def pair_outputs(
    names: Sequence[str],
    outputs: Any,
    what: str,
    *,
    error: type[MLPlatformError] = ArtifactError,
    fix: str = "rebuild the artifact (job.force=true); if it persists, the backend or builder is wrong",
) -> dict[str, Any]:
    """{name: output} for a runner's positional outputs, pairing them strictly.

    `outputs` must be a tuple or list with exactly one entry per name; anything else raises
    `error` naming what returned it (`what`), the expected names and what came back, so that no
    output is silently dropped or mislabelled.
    """
    names = list(names)
    if not isinstance(outputs, (tuple, list)):
        raise error(
            f"{what} returned a {type(outputs).__name__}, expected a tuple of {len(names)} "
            f"output(s) {names}",
            fix,
        )
    if len(outputs) != len(names):
        raise error(
            f"{what} returned {len(outputs)} output(s), expected {len(names)}: {names}",
            fix,
        )
    return dict(zip(names, outputs, strict=True))
