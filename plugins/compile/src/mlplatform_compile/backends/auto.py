"""backend=auto: race the backends that can run here and keep the fastest that passes parity.

Each candidate compiles into its own folder of the staging artifact, is checked against eager at
the build's verification shapes, then all survivors and eager are timed interleaved (medians of
`race_runs` rounds, more when the two fastest are close) at the build's benchmark shape
(job.benchmark_shape, default batch 1 and mid-range sizes; a profile's own shape for a profile). The winner's
files become the artifact's and the whole race goes into the manifest (`backend_extra.auto`).
Eager takes part: when no compiled candidate beats it, eager wins, so an auto build is never
slower than eager at the shape it was timed on. Each shape profile runs its own race.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, MLPlatformError

from ..parity import compare, pair_outputs, worst
from ..schemas import AutoConfig
from .base import Backend, CompileRequest

log = logging.getLogger(__name__)
RACE_DIR = "_race"


def _backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    from mlplatform.api import get_registry

    if name == AutoBackend.name:
        raise ConfigError("backend=auto cannot race itself", "remove auto from backend.candidates")
    return get_registry().get("backend", name)(**dict(options or {}))


class AutoBackend(Backend):
    name = "auto"
    description = "times the backends available here at build, keeps the fastest that passes parity"
    config_schema = AutoConfig

    def __init__(self, **options):
        super().__init__(**options)
        if not self.options["candidates"]:
            raise ConfigError(
                "backend.candidates is empty",
                "list backends to race, e.g. backend.candidates=[aot_inductor,onnxruntime]",
            )
        unknown = set(self.options["candidate_options"]) - set(self.options["candidates"])
        if unknown:
            raise ConfigError(
                f"backend.candidate_options names {sorted(unknown)}, which are not candidates",
                "give options only for backends in backend.candidates",
            )
        self.candidates = [
            _backend(name, self.options["candidate_options"].get(name))
            for name in self.options["candidates"]
        ]
        self.winners: list[str] = []

    @property
    def self_contained(self) -> bool:
        """Whether reload needs no Python model code: true when every race so far was won by a
        self-contained backend (eager or inductor winning makes the artifact need the model)."""
        from mlplatform.api import get_registry

        return bool(self.winners) and all(
            name != "eager" and get_registry().get("backend", name).self_contained
            for name in self.winners
        )

    def version(self) -> str:
        return "; ".join(f"{c.name}: {c.version()}" for c in self.candidates)

    def key(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version(),
            "options": self.options,
            "candidates": [c.key() for c in self.candidates],
        }

    def compile(self, request: CompileRequest):
        race_settings = request.race
        if race_settings is None:
            raise MLPlatformError(
                "backend=auto needs the build's race settings", "build through Build / build()"
            )
        race: dict[str, Any] = {}
        runners: dict[str, Any] = {"eager": request.module}
        extras: dict[str, dict[str, Any]] = {"eager": {}}
        for candidate in self.candidates:
            entry = race.setdefault(candidate.name, {})
            if candidate.name == "eager":
                entry["status"] = "ok"
                continue
            try:
                candidate.check_available(request.device)
            except MLPlatformError as exc:
                entry.update(status="unavailable", reason=exc.problem)
                log.info("auto: %s is not available here: %s", candidate.name, exc.problem)
                continue
            folder = request.staging_dir / RACE_DIR / candidate.name
            folder.mkdir(parents=True)
            sub = CompileRequest(
                module=request.module,
                specs=request.specs,
                example_inputs=request.example_inputs,
                device=request.device,
                dtype=request.dtype,
                staging_dir=folder,
                cache_dir=request.cache_dir,
            )
            start = time.perf_counter()
            try:
                runner = candidate.compile(sub)
            except Exception as exc:  # a candidate that cannot compile this model loses, no more
                entry.update(status="failed", reason=f"{type(exc).__name__}: {_first_line(exc)}")
                log.warning("auto: %s failed to compile: %s", candidate.name, entry["reason"])
                shutil.rmtree(folder, ignore_errors=True)
                continue
            entry["compile_s"] = round(time.perf_counter() - start, 2)
            error = self._parity(runner, request, race_settings)
            entry["max_relative_error"] = error
            if not error <= race_settings.tolerance:
                entry.update(status="parity", reason=f"relative error {error:.3g} above "
                             f"{race_settings.tolerance:g}")
                shutil.rmtree(folder, ignore_errors=True)
                continue
            entry["status"] = "ok"
            runners[candidate.name] = runner
            extras[candidate.name] = sub.extra
        runners.setdefault("eager", request.module)
        race.setdefault("eager", {"status": "ok", "note": "the reference; wins when nothing is faster"})

        sizes = race_settings.sizes or next(
            s for s in race_settings.shape_sets if s.label == "max"
        ).sizes
        names = list(runners)
        samples = self._race(names, runners, race_settings.make_inputs(sizes, seed=7))
        for name in names:
            race[name]["ms"] = round(statistics.median(samples[name]) * 1e3, 3)
            race[name]["runs_ms"] = [round(t * 1e3, 3) for t in samples[name]]
        winner = min(names, key=lambda n: race[n]["ms"])
        log.info("auto: %s wins at %s (%s)", winner, sizes,
                 ", ".join(f"{n} {race[n]['ms']} ms" for n in names))
        self.winners.append(winner)
        # the winner's files become the artifact's; the losers' are dropped
        if winner != "eager":
            for path in (request.staging_dir / RACE_DIR / winner).iterdir():
                shutil.move(str(path), request.staging_dir / path.name)
        kept = []
        if self.options["keep_candidates"]:
            kept = sorted(p.name for p in (request.staging_dir / RACE_DIR).glob("*") if any(p.iterdir()))
        else:
            shutil.rmtree(request.staging_dir / RACE_DIR, ignore_errors=True)
        request.extra.update(extras[winner])
        request.extra["auto"] = {
            "winner": winner,
            "winner_options": next((c.options for c in self.candidates if c.name == winner), {}),
            "sizes": sizes,
            "runs": len(samples[winner]),
            "race": race,
            "kept": kept,
        }
        del runners
        if winner == "eager":
            return request.module
        # what the user will load: the winner's files in their final place
        return self._winner(request.extra).load(
            request.staging_dir, {"backend_extra": request.extra, "inputs": _specs_json(request)},
            request.device, lambda: request.module,
        )

    def _race(self, names, runners, inputs) -> dict[str, list[float]]:
        """Seconds of every timed run per runner, interleaved. The cores may be shared, so the
        median decides; when the two fastest medians are closer than race_margin, the race runs
        as many rounds again (once) before deciding."""
        import torch

        from ..timing import time_samples

        runs = max(1, self.options["race_runs"])
        fns = [runners[n] for n in names]
        with torch.no_grad():
            # a short pause between calls: runtimes whose threads spin after a call (OpenMP,
            # TBB) must not slow the next candidate down
            samples = dict(zip(names, time_samples(fns, inputs, runs, pause=0.05), strict=True))
            ranked = sorted(statistics.median(samples[n]) for n in names)
            if len(ranked) > 1 and ranked[1] - ranked[0] < self.options["race_margin"] * ranked[0]:
                more = time_samples(fns, inputs, runs, pause=0.05, warmup=0)
                for name, extra in zip(names, more, strict=True):
                    samples[name] += extra
        return samples

    def _parity(self, runner, request: CompileRequest, settings) -> float:
        import torch

        figures = {}
        for index, shape_set in enumerate(settings.shape_sets):
            inputs = settings.make_inputs(shape_set.sizes, seed=1000 + index)
            with torch.no_grad():
                expected = pair_outputs(settings.output_names, request.module(*inputs), "eager")
                try:
                    got = pair_outputs(settings.output_names, runner(*inputs), "candidate")
                except Exception as exc:  # a runner that fails at a shape fails parity
                    log.warning("auto: candidate failed at %s: %s", shape_set.label, exc)
                    return float("inf")
            figures[shape_set.label] = {
                "outputs": {n: compare(expected[n], got[n]) for n in settings.output_names}
            }
        return worst(figures)

    @staticmethod
    def _winner(extra: dict[str, Any]) -> Backend:
        auto = extra["auto"]
        return _backend(auto["winner"], auto.get("winner_options"))

    def load(self, artifact_dir, manifest, device, rebuild):
        extra = manifest.get("backend_extra") or {}
        if "auto" not in extra:
            raise MLPlatformError(
                f"{artifact_dir} was built with backend=auto but records no winner",
                "rebuild it (job.force=true)",
            )
        if extra["auto"]["winner"] == "eager":
            return rebuild()
        return self._winner(extra).load(Path(artifact_dir), manifest, device, rebuild)


def load_candidate(module, name: str, package: str = "fallback", device="cpu"):
    """A losing candidate kept by `keep_candidates=true`, loaded from the artifact of the
    CompiledModule `module` (a profile's name or "fallback"), or the winner's own package, loaded
    apart from the module's (which may route a profile to the fallback or eager)."""
    return candidate_runner(module.artifact_dir, module.manifest, name, package, device)


def candidate_runner(artifact_dir, manifest, name: str, package: str = "fallback", device="cpu"):
    """Load one raced candidate's package on its own (no other package of the artifact)."""
    from ..profiles import FALLBACK, PROFILES_DIR

    folder, inputs = Path(artifact_dir), manifest["inputs"]
    if package != FALLBACK:
        entry = next(p for p in manifest["profiles"] if p["name"] == package)
        folder, inputs = folder / PROFILES_DIR / package, entry["inputs"]
    auto = _race_info(manifest, package)
    if name != auto["winner"]:
        if name not in auto.get("kept", []):
            raise ConfigError(
                f"candidate {name!r} was not kept in {folder}", "build with backend.keep_candidates=true"
            )
        folder = folder / RACE_DIR / name
    elif name == "eager":
        raise ConfigError("eager won this race: there is no compiled package", "load the model")
    backend = AutoBackend(**manifest["backend"]["options"])
    candidate = next(c for c in backend.candidates if c.name == name)
    return candidate.load(folder, {**manifest, "inputs": inputs}, device, None)


def _race_info(manifest, package: str) -> dict:
    from ..profiles import FALLBACK

    if package == FALLBACK:
        return manifest["backend_extra"]["auto"]
    entry = next(p for p in manifest["profiles"] if p["name"] == package)
    return entry["backend_extra"]["auto"]


def _specs_json(request: CompileRequest):
    from ..specs import specs_to_json

    return specs_to_json(request.specs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
