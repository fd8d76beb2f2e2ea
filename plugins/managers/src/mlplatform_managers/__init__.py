"""mlplatform-managers: a verified model catalog, safe resumable downloads, memory-budgeted
loading, and `job=infer` tasks. Python API (see docs/managers.md)::

    from mlplatform_managers import ModelManager, load_catalog

    manager = ModelManager("~/models", catalog_dirs=["~/my_catalog"], budget_bytes=4 << 30)
    manager.download("RealESRGAN_x4plus")          # fetch + verify (sha256), no loading
    with manager.use("RealESRGAN_x4plus", device="auto", dtype="float16") as upscaler:
        out = upscale_tiled(upscaler, x, upscaler.scale, tile=512, overlap=32)
    manager.unload_all()

Extending: subclass TypeManager (a model type) or Task (a job=infer task) and register it from
your plugin's `register_model_managers` hook (kinds `manager` and `task`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .base import LoadRequest, TypeManager, module_bytes  # noqa: E402
from .catalog import CATALOG_PATH_ENV, Catalog, load_catalog, parse_catalog_file  # noqa: E402
from .catalog_models import CatalogEntry, DownloadSpec, FileSpec  # noqa: E402
from .download import DownloadPolicy, fetch_url  # noqa: E402
from .errors import (  # noqa: E402
    BudgetError,
    CatalogError,
    DownloadError,
    HashMismatchError,
    InputImageError,
    LicenceError,
    UnsafeModelError,
)
from .manager import MODELS_DIR_ENV, LoadedModel, ModelManager  # noqa: E402
from .tasks import Task, TaskContext  # noqa: E402
from .tasks.caption import caption  # noqa: E402
from .tasks.interrogate import interrogate  # noqa: E402
from .tasks.upscale import upscale_tiled  # noqa: E402

__all__ = [
    "ModelManager", "LoadedModel", "TypeManager", "LoadRequest", "module_bytes",
    "Catalog", "CatalogEntry", "FileSpec", "DownloadSpec", "load_catalog", "parse_catalog_file",
    "CATALOG_PATH_ENV", "MODELS_DIR_ENV", "DownloadPolicy", "fetch_url",
    "Task", "TaskContext", "caption", "interrogate", "upscale_tiled",
    "BudgetError", "CatalogError", "DownloadError", "HashMismatchError", "InputImageError",
    "LicenceError", "UnsafeModelError", "__version__",
]
