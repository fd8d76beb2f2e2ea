"""Compiled-vs-eager parity: the error measure and the per-dtype tolerance a build must meet."""

from __future__ import annotations

from typing import Any

# relative error = max |compiled - eager| / max |eager|, per output
DEFAULT_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}


def tolerance_for(dtype: str, override: float | None = None) -> float:
    if override is not None:
        return float(override)
    return DEFAULT_TOLERANCE.get(dtype, 1e-4)


def compare(reference, candidate) -> dict[str, float]:
    """Error figures for one output pair (computed in float64 on the reference's device)."""
    ref = reference.detach().double()
    out = candidate.detach().to(ref.device).double()
    if ref.shape != out.shape:
        return {"max_abs": float("inf"), "rel": float("inf"), "shape_mismatch": 1.0}
    diff = (out - ref).abs()
    scale = ref.abs().max().item()
    max_abs = diff.max().item() if diff.numel() else 0.0
    return {
        "max_abs": max_abs,
        "mean_abs": diff.mean().item() if diff.numel() else 0.0,
        "rel": max_abs / scale if scale > 0 else max_abs,
        "finite": bool(out.isfinite().all().item()),
    }


def worst(parity: dict[str, dict[str, dict[str, Any]]]) -> float:
    values = [o["rel"] for shape in parity.values() for o in shape["outputs"].values()]
    nonfinite = any(
        not o.get("finite", True) for shape in parity.values() for o in shape["outputs"].values()
    )
    return float("inf") if nonfinite else max(values, default=0.0)
