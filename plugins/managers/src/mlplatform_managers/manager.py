"""ModelManager: the catalog's models fetched, verified, loaded within a memory budget, and freed.

    manager = ModelManager(models_dir="~/models", catalog_dirs=["~/my_catalog"])
    with manager.use("RealESRGAN_x4plus", device="auto") as model:   # pinned while in the block
        ...
    manager.unload("RealESRGAN_x4plus")

`load(name)`: the entry's files are fetched if missing (never offline), verified (size, sha256;
unhashed files refused unless opted out), then the type's manager (registry kind `manager`)
builds the model on the device and dtype chosen by the core's policy. Loaded models count against
a per-device budget; loading past it evicts the least recently used models nobody has pinned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.api import (
    MLPlatformError,
    UnknownNameError,
    get_registry,
    hub_offline,
    resolve_device,
    resolve_dtype,
)

from .base import LoadRequest, TypeManager
from .catalog import Catalog, load_catalog
from .catalog_models import CatalogEntry
from .download import (
    DownloadPolicy,
    check_snapshot_path,
    fetch_hf,
    fetch_url,
    hf_cached,
    local_path,
    verify_file,
    verify_hub_file,
)
from .errors import BudgetError, DownloadError, LicenceError, UnsafeModelError

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "MLPLATFORM_MODELS_DIR"
DEFAULT_RESERVE = 1 << 30


def default_models_dir() -> Path:
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mlplatform" / "models"


def device_key(device: Any) -> str:
    return str(device) if getattr(device, "type", None) != "cuda" or device.index is not None \
        else "cuda:0"


def free_memory(device: Any) -> int:
    """Bytes free on the device now (CUDA: mem_get_info; CPU: available RAM)."""
    if getattr(device, "type", None) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class LoadedModel:
    name: str
    entry: CatalogEntry
    model: Any
    device: Any
    dtype: Any
    size_bytes: int
    manager: TypeManager
    pins: int = 0
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.entry.type, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "size_bytes": self.size_bytes,
            "pins": self.pins, "load_seconds": round(self.load_seconds, 3),
        }


class ModelManager:
    """One process's models: see the module docstring."""

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        *,
        catalog: Catalog | None = None,
        catalog_dirs: Iterable[str | os.PathLike] = (),
        offline: bool | None = None,
        budget_bytes: int | dict[str, int] | None = None,
        reserve_bytes: int = DEFAULT_RESERVE,
        allow_unhashed: Iterable[str] = (),
        allow_pickle: Iterable[str] = (),
        accept_licences: Iterable[str] = (),
        hf_cache_dir: str | None = None,
        download_policy: DownloadPolicy | None = None,
        type_managers: dict[str, TypeManager] | None = None,
    ):
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.catalog = catalog if catalog is not None else load_catalog(catalog_dirs)
        self.offline = hub_offline() if offline is None else (offline or hub_offline())
        self.reserve_bytes = int(reserve_bytes)
        self._budget_option = budget_bytes
        self.allow_unhashed = set(allow_unhashed)
        self.allow_pickle = set(allow_pickle)
        self.accept_licences = set(accept_licences)
        self.hf_cache_dir = hf_cache_dir
        self.download_policy = download_policy or DownloadPolicy()
        self._type_managers = dict(type_managers or {})
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # LRU order: oldest first
        self._budgets: dict[str, int] = {}
        self.tainted: dict[str, str] = {}
        self._lock = threading.RLock()
        self._name_locks: dict[str, threading.Lock] = {}
        for name in [*self.allow_unhashed, *self.allow_pickle, *self.accept_licences]:
            self.catalog.get(name)  # an opt-in for a model that does not exist is a typo

    # --- the catalog's view -----------------------------------------------------------------

    def entry(self, name: str) -> CatalogEntry:
        return self.catalog.get(name)

    def filtered(self, **fields: Any) -> list[CatalogEntry]:
        return self.catalog.filter(**fields)

    def manager_for(self, entry: CatalogEntry) -> TypeManager:
        for manager in self._type_managers.values():
            if entry.type in manager.types:
                return manager
        registry = get_registry()
        names = registry.names("manager")
        for name in names:
            cls = registry.get("manager", name)
            if entry.type in getattr(cls, "types", ()):
                manager = cls() if isinstance(cls, type) else cls
                self._type_managers[name] = manager
                return manager
        raise UnknownNameError(
            f"model {entry.name!r} has type {entry.type!r}, which no installed manager loads "
            f"(managers: {', '.join(sorted(names)) or 'none'})",
            "install a plugin that registers a manager for this type (docs/managers.md, "
            "'Adding a model type'), or pick a model of another type",
        )

    def _type_manager_or_none(self, entry: CatalogEntry) -> TypeManager | None:
        """The type's manager; None for catalog-only types (vae, face_detector), which can be
        downloaded although nothing loads them."""
        try:
            return self.manager_for(entry)
        except UnknownNameError:
            return None

    def file_paths(self, entry: CatalogEntry, *, fetch: bool = False) -> tuple[Path, dict[str, Path]]:
        """(root, {catalog path: local path}) of the entry's files; `fetch` downloads missing ones."""
        snapshot = entry.hf_snapshot
        files: dict[str, Path] = {}
        if snapshot is not None:
            repo, revision = snapshot
            for spec in entry.files:
                found = hf_cached(repo, spec.path, revision, self.hf_cache_dir)
                if found is None and fetch:
                    found = fetch_hf(repo, spec.path, revision, cache_dir=self.hf_cache_dir,
                                     offline=self.offline, what=f"model {entry.name!r}")
                if found is None:
                    raise self._missing(entry, spec.path)
                files[spec.path] = found
            root = next(iter(files.values())).parent
            for spec in entry.files:  # nested files: the snapshot root is above them
                depth = spec.path.count("/")
                if depth:
                    root = files[spec.path].parents[depth]
                    break
            for spec in entry.files:
                check_snapshot_path(root, spec.path, entry.name)
            return root, files
        root = self.models_dir / entry.name
        for spec in entry.files:
            path = local_path(self.models_dir, entry.name, spec.path)
            if not path.is_file():
                item = entry.download_for(spec.path)
                if not fetch or item is None:
                    raise self._missing(entry, spec.path, downloadable=item is not None)
                if self.offline:
                    raise self._missing(entry, spec.path)
                self._refuse_unhashed(entry, spec.path)
                fetch_url(item.url, path, sha256=spec.sha256, size=spec.size,  # type: ignore[arg-type]
                          models_dir=self.models_dir, policy=self.download_policy,
                          what=f"{entry.name}/{spec.path}")
            files[spec.path] = path
        return root, files

    def _missing(self, entry: CatalogEntry, path: str, downloadable: bool = True) -> MLPlatformError:
        where = (f"the Hugging Face cache ({entry.hf_snapshot[0]})" if entry.hf_snapshot
                 else str(self.models_dir / entry.name / path))
        if self.offline:
            return DownloadError(
                f"model {entry.name!r}: file {path} is missing ({where}) and offline mode is on "
                "(HF_HUB_OFFLINE=1 or manager.offline=true), so it is not downloaded",
                "go online once to download it, or copy the file there",
            )
        if not downloadable:
            return DownloadError(
                f"model {entry.name!r}: file {path} is missing ({where}) and the catalog entry "
                "has no download for it",
                "put the file there, or add a download (url or hf_repo) to the entry",
            )
        return DownloadError(f"model {entry.name!r}: file {path} is missing ({where})",
                             f"download it: manager.download({entry.name!r})")

    def _refuse_unhashed(self, entry: CatalogEntry, path: str | None = None) -> None:
        unhashed = [path] if path and path in entry.unhashed_files else (
            [] if path else entry.unhashed_files)
        if unhashed and not (entry.allow_unhashed or entry.name in self.allow_unhashed):
            raise UnsafeModelError(
                f"model {entry.name!r}: {', '.join(unhashed)} has no sha256 in the catalog, so "
                "its content cannot be verified",
                f"add the file's published sha256 to the entry, or opt out for this model: "
                f"manager.allow_unhashed=[{entry.name}] (or \"allow_unhashed\": true in your "
                "catalog entry)",
            )

    def status(self, entry: CatalogEntry) -> str:
        """'loaded', 'available' (all files present), 'tainted', 'missing' or 'partial'."""
        if entry.name in self._loaded:
            return "loaded"
        if entry.name in self.tainted:
            return "tainted"
        try:
            self.file_paths(entry)
            return "available"
        except UnsafeModelError:
            return "unsafe"
        except MLPlatformError:
            part = any((self.models_dir / entry.name / (f.path + ".part")).exists()
                       for f in entry.files)
            return "partial" if part else "missing"

    def available(self) -> list[str]:
        return [e.name for e in self.catalog if self.status(e) in ("available", "loaded")]

    def download(self, name: str) -> dict[str, Path]:
        """Fetch (if missing) and verify every file of `name` and of the models it requires; a
        model whose licence must be accepted is not even downloaded before it is."""
        entry = self.entry(name)
        type_manager = self._type_manager_or_none(entry)
        if type_manager is not None:
            self._check_licence(entry, type_manager)
        for required in entry.requires:
            self.download(required)
        self._refuse_unhashed(entry)
        _root, files = self.file_paths(entry, fetch=True)
        for spec in entry.files:
            if spec.sha256 is None and entry.hub_pinned:  # the hash the hub published
                verify_hub_file(files[spec.path], size=spec.size, models_dir=self.models_dir,
                                what=f"model {name!r}")
                continue
            verify_file(files[spec.path], sha256=spec.sha256, size=spec.size,
                        models_dir=self.models_dir, what=f"model {name!r}",
                        quarantine_bad=entry.hf_snapshot is None)
        return files

    # --- loading and the budget ---------------------------------------------------------------

    @property
    def loaded(self) -> dict[str, LoadedModel]:
        with self._lock:
            return dict(self._loaded)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def taint(self, name: str, reason: str) -> None:
        """Mark a model broken: it is unloaded and refused until `untaint`."""
        self.entry(name)
        self.tainted[name] = reason
        self.unload(name)

    def untaint(self, name: str) -> None:
        self.tainted.pop(name, None)

    def budget(self, device: Any) -> int:
        key = device_key(device)
        with self._lock:
            if key not in self._budgets:
                option = self._budget_option
                if isinstance(option, dict):
                    option = option.get(key, option.get(getattr(device, "type", ""), None))
                if option is None:
                    in_use = sum(r.size_bytes for r in self._loaded.values()
                                 if device_key(r.device) == key)
                    option = max(free_memory(device) + in_use - self.reserve_bytes, 0)
                self._budgets[key] = int(option)
            return self._budgets[key]

    def used_bytes(self, device: Any) -> int:
        key = device_key(device)
        with self._lock:
            return sum(r.size_bytes for r in self._loaded.values() if device_key(r.device) == key)

    def _make_room(self, device: Any, needed: int, name: str) -> None:
        """Evict least-recently-used, unpinned models on `device` until `needed` bytes fit."""
        budget = self.budget(device)
        if needed > budget:
            raise BudgetError(
                f"model {name!r} needs about {needed / 2**20:.1f} MiB, more than the whole "
                f"memory budget of {device} ({budget / 2**20:.1f} MiB)",
                "raise manager.budget_bytes (or lower manager.reserve_bytes), use a smaller "
                "dtype (dtype=float16 on CUDA), or another device",
            )
        key = device_key(device)
        with self._lock:
            while self.used_bytes(device) + needed > budget:
                victim = next((r for r in self._loaded.values()
                               if device_key(r.device) == key and r.pins == 0), None)
                if victim is None:
                    pinned = [r.name for r in self._loaded.values() if device_key(r.device) == key]
                    raise BudgetError(
                        f"model {name!r} ({needed / 2**20:.1f} MiB) does not fit in the budget of "
                        f"{device} ({budget / 2**20:.1f} MiB): the models there are in use "
                        f"({', '.join(pinned)})",
                        "wait for them to be released, or raise manager.budget_bytes",
                    )
                log.info("evicting %s (%.1f MiB, least recently used) to load %s",
                         victim.name, victim.size_bytes / 2**20, name)
                self.unload(victim.name)

    def load(self, name: str, *, device: Any = "auto", dtype: Any = "float32") -> Any:
        """The loaded model `name` (loading it once, even when several threads ask at once)."""
        return self._load_record(name, device, dtype).model

    def _load_record(self, name: str, device: Any, dtype: Any, pin: bool = False) -> LoadedModel:
        with self._lock:
            record = self._loaded.get(name)
            if record is not None:
                self._loaded.move_to_end(name)
                record.pins += pin
                return record
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:
                record = self._loaded.get(name)
                if record is not None:
                    self._loaded.move_to_end(name)
                    record.pins += pin
                    return record
            record = self._load_new(name, device, dtype)
            with self._lock:
                record.pins += pin
                self._loaded[name] = record
            return record

    def _load_new(self, name: str, device: Any, dtype: Any) -> LoadedModel:
        entry = self.entry(name)
        if name in self.tainted:
            raise MLPlatformError(
                f"model {name!r} is tainted: {self.tainted[name]}",
                f"fix the cause, then manager.untaint({name!r})",
            )
        manager = self.manager_for(entry)
        self._check_licence(entry, manager)  # before anything is downloaded
        torch_device = device if not isinstance(device, str) else resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        if entry.size_bytes is not None and entry.size_bytes > self.budget(torch_device):
            self._make_room(torch_device, entry.size_bytes, name)  # refuses before downloading
        self.download(name)
        root, files = self.file_paths(entry)
        estimate = sum(p.stat().st_size for p in files.values())
        self._make_room(torch_device, estimate, name)
        started = time.perf_counter()
        request = LoadRequest(
            entry=entry, root=root, files=files, device=torch_device, dtype=torch_dtype,
            allow_pickle=entry.allow_pickle or name in self.allow_pickle,
        )
        try:
            model = manager.load_model(request)
        except MLPlatformError:
            raise
        except Exception as exc:
            self.tainted[name] = f"loading failed: {exc}"
            raise MLPlatformError(
                f"model {name!r} ({entry.type}) could not be loaded: {type(exc).__name__}: {exc}",
                "check that its files are the architecture the catalog says (the model is marked "
                "tainted for this process)",
            ) from exc
        size = manager.size_bytes(model)
        record = LoadedModel(name=name, entry=entry, model=model, device=torch_device,
                             dtype=torch_dtype, size_bytes=size, manager=manager,
                             load_seconds=time.perf_counter() - started)
        if size > estimate:
            try:
                self._make_room(torch_device, size, name)
            except BudgetError:
                record.model = None
                del model, record
                manager.release(None, torch_device)
                raise
        log.info("loaded %s (%s) on %s as %s: %.1f MiB in %.2fs", name, entry.type, torch_device,
                 str(torch_dtype).removeprefix("torch."), size / 2**20, time.perf_counter() - started)
        return record

    def _check_licence(self, entry: CatalogEntry, manager: TypeManager) -> None:
        if manager.licence_acceptance and entry.name not in self.accept_licences:
            raise LicenceError(
                f"model {entry.name!r} ({entry.type}) is licensed under {entry.licence}; it is "
                "not loaded until you accept that licence",
                f"read it ({entry.homepage or 'see the catalog entry'}) and, if your use "
                f"complies, pass manager.accept_licences=[{entry.name}] "
                f"(Python: ModelManager(accept_licences=[{entry.name!r}]))",
            )

    @contextlib.contextmanager
    def use(self, name: str, *, device: Any = "auto", dtype: Any = "float32") -> Iterator[Any]:
        """Load (or reuse) `name` and pin it for the block: pinned models are never evicted."""
        record = self._load_record(name, device, dtype, pin=True)
        try:
            yield record.model
        finally:
            with self._lock:
                record.pins -= 1

    def unload(self, name: str) -> bool:
        """Drop `name` and free its memory; False when it was not loaded. A pinned model (in
        use) is refused: unloading it would pull it from under its user."""
        with self._lock:
            record = self._loaded.get(name)
            if record is None:
                return False
            if record.pins:
                raise MLPlatformError(
                    f"model {name!r} is in use ({record.pins} pin(s)) and cannot be unloaded",
                    "leave the `with manager.use(...)` block first",
                )
            del self._loaded[name]
        manager, device = record.manager, record.device
        record.model = None
        del record
        manager.release(None, device)
        return True

    def unload_all(self) -> list[str]:
        """Unload every unpinned model (iterating over a copy of the names)."""
        done = []
        for name in list(self._loaded):
            with self._lock:
                record = self._loaded.get(name)
                pinned = record is not None and record.pins > 0
            if not pinned and self.unload(name):
                done.append(name)
        return done

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._loaded.values()]
