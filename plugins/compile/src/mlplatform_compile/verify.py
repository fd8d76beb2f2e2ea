"""Verification against eager: run a runner and the eager model on the same inputs at every
shape set, record the error figures, and decide whether they meet the tolerance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlplatform.api import ArtifactError, MLPlatformError

from .parity import compare, pair_outputs, worst
from .specs import ShapeSet

if TYPE_CHECKING:
    from .build import Build


def check_parity(builder: Build, runner, eager, shape_sets: Sequence[ShapeSet]) -> dict[str, Any]:
    """Compiled vs eager at each shape set; returns per-shape, per-output error figures."""
    import torch
    from tqdm.auto import tqdm

    results: dict[str, Any] = {}
    for index, shape_set in enumerate(tqdm(shape_sets, desc="verify", leave=False, disable=None)):
        inputs = builder.make_inputs(shape_set.sizes, seed=1000 + index)
        with torch.no_grad():
            reference = eager(*inputs)
            outputs = runner(*inputs)
        not_saved = "the artifact was not saved"
        names = builder.model_output_names
        reference = pair_outputs(
            names, reference, f"the eager {builder.name} model at {shape_set.label} ({not_saved})",
            error=MLPlatformError,
            fix="make the builder's run_forward return one output per model_output_names entry",
        )
        outputs = pair_outputs(
            names, outputs, f"the {builder.backend.name} runner at {shape_set.label} ({not_saved})",
            fix=f"fix the {builder.backend.name} backend: its runner must return one output per "
            "model_output_names entry, in that order",
        )
        results[shape_set.label] = {
            "sizes": shape_set.sizes,
            "outputs": {name: compare(reference[name], outputs[name]) for name in names},
        }
    return results


def verified_within(manifest: Mapping[str, Any], tolerance: float) -> bool:
    """True when the manifest holds parity figures and their worst error is within `tolerance`."""
    figures = manifest.get("parity")
    error = manifest.get("max_relative_error")
    return (
        bool(figures)
        and isinstance(error, (int, float))
        and math.isfinite(error)
        and worst(figures) <= tolerance
        and error <= tolerance
        and all(
            bool(p.get("parity")) and worst(p["parity"]) <= tolerance
            for p in manifest.get("profiles") or []
        )
    )


def check_within_tolerance(builder: Build, figures: dict[str, Any], what: str = "") -> None:
    error = worst(figures)
    if error <= builder.tolerance:
        return
    per_shape = {
        label: {out: round(v["rel"], 8) for out, v in shape["outputs"].items()}
        for label, shape in figures.items()
    }
    raise ArtifactError(
        f"{builder.backend.name} output"
        + (f" (package {what})" if what else "")
        + f" differs from eager by {error:.3g} (relative), above the "
        f"{builder.dtype} tolerance {builder.tolerance:g}; the artifact was not saved. "
        f"Per shape: {per_shape}",
        "try another backend or backend options (e.g. freezing=false), a wider dtype, "
        "or accept the error explicitly with job.tolerance=VALUE",
    )

