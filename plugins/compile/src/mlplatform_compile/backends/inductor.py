"""torch.compile (TorchInductor): JIT compilation with dynamic dims marked from the build ranges.

The artifact is a manifest plus inductor's persistent cache (under the shared cache dir). A
reload compiles the graph again, but from that cache: with freezing (the default) inductor's FX
graph cache is bypassed (frozen constants; torch 2.14), so the graph is traced and lowered again
while the generated C++ kernels are reused; without freezing the whole graph comes from the cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlplatform.api import ConfigError

from ..schemas import InductorConfig
from .base import COMPILE_COUNT, Backend, CompileRequest

log = logging.getLogger(__name__)
MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def user_cache_dir() -> str | None:
    """TORCHINDUCTOR_CACHE_DIR when the user set it. Importing torch._dynamo writes torch's own
    default (/tmp/torchinductor_<user>) into the environment, which is not a choice to honour."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not value:
        return None
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # pragma: no cover - older torch
        return value
    return None if os.path.abspath(value) == os.path.abspath(default_cache_dir()) else value


def use_cache_dir(cache_dir: Path) -> Path:
    """Point inductor's persistent cache at `cache_dir/inductor` unless the user chose one."""
    path = Path(user_cache_dir() or cache_dir / "inductor")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def mark_dynamic(specs, inputs) -> None:
    """Mark the dynamic dims of `inputs` so dynamo compiles one graph for the whole range."""
    import torch

    for spec, tensor in zip(specs, inputs, strict=False):
        for axis, dim in spec.dims():
            # torch specialises sizes 0 and 1, so a size-1 axis cannot be marked dynamic
            if dim.static or tensor.shape[axis] < 2:
                continue
            if dim.multiple > 1:
                # a size that must be a multiple (encoder pixels) meets the model's own `% 8`
                # checks, which mark_dynamic's hard range turns into a ConstraintViolationError;
                # maybe_mark_dynamic keeps it symbolic wherever the model allows
                torch._dynamo.maybe_mark_dynamic(tensor, axis)
            else:
                torch._dynamo.mark_dynamic(tensor, axis, min=max(2, dim.min), max=dim.max)


class InductorBackend(Backend):
    name = "inductor"
    description = "torch.compile with TorchInductor (needs the model's Python class to reload)"

    config_schema = InductorConfig

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["mode"] not in MODES:
            raise ConfigError(
                f"unknown torch.compile mode {self.options['mode']!r}",
                f"set backend.mode to null or one of {', '.join(MODES[1:])}",
            )

    def key(self) -> dict:
        # artifacts built before freezing was applied through config.patch were verified and
        # timed without it: a new key, so they are rebuilt instead of reused
        return {**super().key(), "options_applied_by": "inductor config.patch"}

    def compile_options(self) -> dict:
        """The mode's inductor options plus freezing (torch.compile takes a mode or options, not
        both). Freezing folds the weights in as constants: inference only, like every build."""
        import torch

        mode = self.options["mode"]
        options = dict(torch._inductor.list_mode_options(mode)) if mode else {}
        options["freezing"] = self.options["freezing"]
        return options

    def _with_options(self, compiled):
        """`compiled` run with the inductor options in force. torch.compile(options=...) is not
        enough for freezing: it compiled the SD CLIP text encoder with plain addmm instead of
        prepacked MKL linears (71 vs 57 ms per call, AOTInductor 65; torch 2.14, CPU), as
        if freezing were off. Compiling happens on any call (a new shape recompiles), so every
        call runs under the patch."""
        import torch

        options = self.compile_options()

        def run(*inputs):
            with torch._inductor.config.patch(options):
                return compiled(*inputs)

        return run

    def _compiled(self, module, specs, example_inputs, cache_dir: Path):
        import torch

        use_cache_dir(cache_dir)
        compiled = self._with_options(torch.compile(
            module, fullgraph=self.options["fullgraph"], dynamic=None, options=self.compile_options()
        ))
        mark_dynamic(specs, example_inputs)
        with torch.no_grad():
            compiled(*example_inputs)  # compile now, not on the user's first call
        return compiled

    def compile(self, request: CompileRequest):
        COMPILE_COUNT["n"] += 1
        compiled = self._compiled(
            request.module, request.specs, request.example_inputs, request.cache_dir
        )
        request.extra["inductor_cache_dir"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        return compiled

    def load(self, artifact_dir, manifest, device, rebuild):
        import torch

        from ..specs import specs_from_json

        cache = manifest.get("backend_extra", {}).get("inductor_cache_dir")
        if cache and user_cache_dir() is None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        module = rebuild()
        specs = specs_from_json(manifest["inputs"])
        compiled = self._with_options(torch.compile(
            module, fullgraph=self.options["fullgraph"], options=self.compile_options()
        ))

        def run(*inputs):
            mark_dynamic(specs, inputs)
            return compiled(*inputs)

        return run
