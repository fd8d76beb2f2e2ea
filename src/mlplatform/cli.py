"""The command line: `python -m mlplatform job=...` and the `mlplatform` console script.

Plugins load first, their config groups are handed to Hydra, then Hydra composes the job and
this module dispatches it through the registry. Bad input (an MLPlatformError, or a Hydra
composition error) prints a message and exits with status 2; `--verbose`, `hydra.verbose=true` or
MLPLATFORM_VERBOSE=1 keep the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

from .errors import ConfigError, MLPlatformError

log = logging.getLogger("mlplatform")

EXIT_BAD_INPUT = 2
_FULL_ERROR_MARK = "MLPLATFORM_SET_HYDRA_FULL_ERROR"


def _verbose(cfg: Any = None) -> bool:
    if os.environ.get("MLPLATFORM_VERBOSE", "").strip().lower() in {"1", "true", "yes"}:
        return True
    try:
        from hydra.core.hydra_config import HydraConfig

        return bool(HydraConfig.get().verbose)
    except (ImportError, ValueError):
        return False


def _report(exc: MLPlatformError) -> None:
    print(f"mlplatform: error: {exc.problem}", file=sys.stderr)
    if exc.fix:
        print(f"  fix: {exc.fix}", file=sys.stderr)


def run_job(cfg: Any) -> Any:
    """Check the composed config, then run the job it selects."""
    from omegaconf import OmegaConf

    from .plugins import get_registry

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required option(s): {', '.join(missing)}",
            " ".join(f"{key}=VALUE" for key in missing) + " on the command line",
        )
    job_cfg = cfg.get("job")
    if job_cfg is None or not job_cfg.get("name"):
        raise ConfigError("the config selects no job", "pass job=NAME (e.g. job=plugins)")
    job = get_registry().job(job_cfg.name)
    return job.run(cfg)


def _task(cfg: Any) -> Any:
    """Run the job. Bad input propagates as MLPlatformError, which main() reports: a launcher
    (joblib, submitit, Ray) hands a job's exception back to the CLI process, where a sys.exit
    inside the job would look like a crashed worker. Any other exception is marked as a crash
    (the mark survives pickling), so it is never mistaken for a composition error."""
    try:
        return run_job(cfg)
    except MLPlatformError as exc:
        exc.mlplatform_verbose = _verbose(cfg)  # type: ignore[attr-defined]  (hydra.verbose=true)
        raise
    except Exception as exc:
        exc.mlplatform_job_crashed = True  # type: ignore[attr-defined]
        raise


def _pop_verbose_flag(argv: list[str]) -> bool:
    if "--verbose" in argv:
        argv.remove("--verbose")
        return True
    return False


def main(argv: list[str] | None = None) -> None:
    import hydra

    from .config import (
        PRIMARY_CONFIG_NAME,
        check_choices,
        check_override_syntax,
        explain_composition_error,
        register_search_path,
        store_primary_config,
    )
    from .plugins import get_host

    args = list(sys.argv[1:] if argv is None else argv)
    if _pop_verbose_flag(args):
        os.environ["MLPLATFORM_VERBOSE"] = "1"
    try:
        host = get_host()
        check_override_syntax(args)
        check_choices(args, host)
        store_primary_config(host)
        register_search_path(host)
    except MLPlatformError as exc:
        if _verbose():
            raise
        _report(exc)
        sys.exit(EXIT_BAD_INPUT)

    entry = hydra.main(version_base="1.3", config_path="conf", config_name=PRIMARY_CONFIG_NAME)(_task)
    sys.argv = [sys.argv[0], *args]
    # Hydra then raises its composition errors instead of printing them, so they are reported
    # like every other bad input (key, value, expected type, fix; exit 2)
    # (a child process inherits the variable: the marker says it was ours, not the user's)
    set_by_us = os.environ.get(_FULL_ERROR_MARK) == "1"
    user_wants_traceback = _verbose() or (
        os.environ.get("HYDRA_FULL_ERROR") == "1" and not set_by_us
    )
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_FULL_ERROR_MARK] = "1"
    try:
        entry()
    except MLPlatformError as exc:
        if user_wants_traceback or getattr(exc, "mlplatform_verbose", False):
            traceback.print_exc()
        _report(exc)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:
        crashed = getattr(exc, "mlplatform_job_crashed", False)
        explained = None if crashed else explain_composition_error(exc)
        if explained is None or user_wants_traceback:
            traceback.print_exc()
            sys.exit(1 if explained is None else EXIT_BAD_INPUT)
        _report(explained)
        sys.exit(EXIT_BAD_INPUT)
