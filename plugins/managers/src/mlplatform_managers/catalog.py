"""The model catalog: the JSON files shipped in this package, then the user's catalog directories
(`$MLPLATFORM_CATALOG_PATH`, then `manager.catalog_dirs`), later entries overriding earlier ones
by name."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlplatform.api import closest

from .catalog_models import CatalogEntry, CatalogFile
from .errors import CatalogError

log = logging.getLogger(__name__)

CATALOG_PATH_ENV = "MLPLATFORM_CATALOG_PATH"
PACKAGED = "mlplatform_managers.catalogs"


@dataclass
class Catalog:
    """Entries by name, with the file each came from."""

    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(sorted(self.entries.values(), key=lambda e: (e.type, e.name)))

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> CatalogEntry:
        try:
            return self.entries[name]
        except KeyError:
            guess = closest(name, list(self.entries))
            raise CatalogError(
                f"unknown model {name!r}" + (f"; did you mean {guess!r}?" if guess else ""),
                "`python -m mlplatform job=infer task=list` prints the catalog; add your own "
                f"entries in a catalog directory (${CATALOG_PATH_ENV} or manager.catalog_dirs)",
            ) from None

    def filter(self, **fields: Any) -> list[CatalogEntry]:
        """Entries whose fields equal the given values (e.g. type="esrgan")."""
        return [e for e in self if all(getattr(e, k) == v for k, v in fields.items())]

    def types(self) -> list[str]:
        return sorted({e.type for e in self.entries.values()})


def _error_location(loc: tuple[Any, ...], data: Any) -> tuple[str, str]:
    """(entry label, field path) for a pydantic error location inside a catalog file."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, list) and index < len(models) and isinstance(models[index], dict):
            name = models[index].get("name")
        label = f"entry #{index}" + (f" {name!r}" if name else "")
        rest = ".".join(str(p) for p in loc[2:])
        return label, rest or "(the entry)"
    return "the file", ".".join(str(p) for p in loc) or "(top level)"


def parse_catalog_file(text: str, source: str) -> CatalogFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"catalog file {source} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})",
            "fix the JSON syntax; docs/managers.md shows a complete catalog file",
        ) from exc
    try:
        return CatalogFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        entry, where = _error_location(tuple(first["loc"]), data)
        more = exc.error_count() - 1
        raise CatalogError(
            f"catalog file {source}: {entry}, field {where}: {first['msg']}"
            + (f" (and {more} more error(s))" if more else ""),
            "fix that field; the schema is in docs/managers.md (catalog entries)",
        ) from exc


def _packaged_files() -> list[tuple[str, str]]:
    root = resources.files(PACKAGED)
    return sorted(
        (f"{PACKAGED}/{item.name}", item.read_text(encoding="utf-8"))
        for item in root.iterdir()
        if item.name.endswith(".json")
    )


def catalog_dirs_from_env() -> list[Path]:
    raw = os.environ.get(CATALOG_PATH_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _user_files(directory: Path) -> list[tuple[str, str]]:
    if not directory.is_dir():
        raise CatalogError(
            f"catalog directory {directory} does not exist or is not a directory",
            f"create it, or fix manager.catalog_dirs / ${CATALOG_PATH_ENV}",
        )
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            found.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(
                f"catalog file {path} cannot be read: {exc}", "check its permissions and encoding"
            ) from exc
    return found


def load_catalog(extra_dirs: Iterable[str | os.PathLike] = (), *, packaged: bool = True) -> Catalog:
    """The packaged catalog overridden by `$MLPLATFORM_CATALOG_PATH` dirs, then `extra_dirs`."""
    catalog = Catalog()
    sources = _packaged_files() if packaged else []
    for directory in [*catalog_dirs_from_env(), *(Path(d).expanduser() for d in extra_dirs)]:
        sources.extend(_user_files(directory))
    for source, text in sources:
        for entry in parse_catalog_file(text, source).models:
            if entry.name in catalog.entries:
                log.info("catalog: %s overrides %s from %s", source, entry.name,
                         catalog.sources[entry.name])
            catalog.entries[entry.name] = entry
            catalog.sources[entry.name] = source
    for entry in catalog.entries.values():
        for required in entry.requires:
            if required not in catalog.entries:
                guess = closest(required, list(catalog.entries))
                raise CatalogError(
                    f"catalog file {catalog.sources[entry.name]}: entry {entry.name!r}, field "
                    f"requires: unknown model {required!r}"
                    + (f" (did you mean {guess!r}?)" if guess else ""),
                    "name a model the catalog has, or add an entry for it",
                )
    return catalog
