"""The catalog's schema: what one model entry in a catalog JSON file may say.

A catalog file is `{"format": 1, "type": TYPE, "models": [ENTRY, ...]}`. Every field is checked
here (pydantic, unknown keys refused), so a typo in a user's catalog is an error naming the file,
the entry and the field instead of a model that silently misbehaves later.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CATALOG_FORMAT = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
# a full git commit id: a Hugging Face revision that can never point at other content
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# the model types of issue 7; a type with no installed manager can be listed and downloaded
KNOWN_TYPES = (
    "stable_diffusion", "vae", "clip", "open_clip", "blip", "esrgan", "gfpgan", "codeformer",
    "safety_checker", "compiled", "embedding", "text_diffusion", "face_detector",
)


def check_relative_path(value: str, what: str) -> str:
    """A path inside the models directory: relative, '/'-separated, no '..', no empty parts."""
    if not value or value != value.strip():
        raise ValueError(f"{what} must be a non-empty path without surrounding spaces")
    if "\\" in value or "\x00" in value:
        raise ValueError(f"{what} {value!r} may not contain backslashes or NUL bytes")
    path = PurePosixPath(value)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} {value!r} is absolute; it must be relative to the models dir")
    if any(part in ("..", ".", "") for part in value.split("/")):
        raise ValueError(f"{what} {value!r} may not contain '..', '.' or empty parts")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    """One file of a model, relative to the model's directory."""

    path: str
    sha256: str | None = None
    size: int | None = Field(default=None, ge=0)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_relative_path(value, "path")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 hexadecimal digits (or null: unhashed)")
        return value


class DownloadSpec(_Strict):
    """Where one file comes from: an http(s) URL, or a file of a Hugging Face repo."""

    file_name: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str = "main"

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        return check_relative_path(value, "file_name")

    @model_validator(mode="after")
    def _one_source(self) -> DownloadSpec:
        if (self.url is None) == (self.hf_repo is None):
            raise ValueError("give exactly one of url (http/https) or hf_repo (+ hf_filename)")
        if self.url is not None:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"url {self.url!r} must be an http:// or https:// URL")
            if self.hf_filename is not None:
                raise ValueError("hf_filename belongs with hf_repo, not with url")
        else:
            if not re.match(r"^[\w.\-]+/[\w.\-]+$", self.hf_repo or ""):
                raise ValueError(f"hf_repo {self.hf_repo!r} must be 'owner/name'")
            if self.hf_filename != self.file_name:
                raise ValueError(
                    "hf_filename must equal file_name (the file keeps its name in the repo)"
                )
        return self

    @property
    def source(self) -> str:
        if self.url is not None:
            return self.url
        return f"hf://{self.hf_repo}/{self.hf_filename}@{self.hf_revision}"


class EsrganSettings(_Strict):
    # the scale the weights must have (spandrel detects it; a mismatch is an error)
    scale: int | None = Field(default=None, ge=1, le=16)


class PretrainedSettings(_Strict):
    # a transformers / diffusers directory (save_pretrained layout)
    format: Literal["transformers", "diffusers"] = "transformers"


class FaceDetectorSettings(_Strict):
    # facexlib's name for the detector network whose weights the entry holds
    det_model: Literal["retinaface_resnet50", "retinaface_mobile0.25"] = "retinaface_resnet50"


# type -> schema of its `config`; types not listed take any mapping
TYPE_SETTINGS: dict[str, type[BaseModel]] = {
    "esrgan": EsrganSettings,
    "gfpgan": EsrganSettings,
    "codeformer": EsrganSettings,
    "face_detector": FaceDetectorSettings,
    "clip": PretrainedSettings,
    "blip": PretrainedSettings,
    "vae": PretrainedSettings,
    "safety_checker": PretrainedSettings,
    "stable_diffusion": PretrainedSettings,
}


class CatalogEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    version: str = ""
    licence: str
    homepage: str | None = None
    files: list[FileSpec] = Field(min_length=1)
    download: list[DownloadSpec] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    # opt-outs, per model: files without a sha256, and full pickle loading
    allow_unhashed: bool = False
    allow_pickle: bool = False
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogEntry:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("files lists the same path twice")
        for item in self.download:
            if item.file_name not in paths:
                raise ValueError(
                    f"download file_name {item.file_name!r} is not one of files[].path {paths}"
                )
        hf = {(d.hf_repo, d.hf_revision) for d in self.download if d.hf_repo}
        if hf and (len(hf) > 1 or any(d.url for d in self.download)):
            raise ValueError(
                "files from Hugging Face must all come from one repo and revision (they form one "
                "snapshot directory); do not mix them with url downloads"
            )
        if self.name == "none":
            raise ValueError("'none' is reserved (model=none selects no model)")
        if self.name in self.requires:
            raise ValueError("an entry cannot require itself")
        return self

    @field_validator("config")
    @classmethod
    def _type_config(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        settings = TYPE_SETTINGS.get(info.data.get("type", ""))
        if settings is not None:
            try:
                settings.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(config)"
                raise ValueError(f"{where}: {first['msg']}") from None
        return value

    def settings(self) -> Any:
        """The validated type-specific `config` (a pydantic model, or the raw mapping)."""
        schema = TYPE_SETTINGS.get(self.type)
        return schema.model_validate(self.config) if schema else dict(self.config)

    def download_for(self, path: str) -> DownloadSpec | None:
        return next((d for d in self.download if d.file_name == path), None)

    @property
    def hf_snapshot(self) -> tuple[str, str] | None:
        """(repo, revision) when the entry's files come from a Hugging Face repo."""
        for item in self.download:
            if item.hf_repo:
                return item.hf_repo, item.hf_revision
        return None

    @property
    def hub_pinned(self) -> bool:
        """Files from a Hugging Face repo at a full commit id: the hub publishes each file's
        content hash for that commit (its ETag: sha256 for LFS files, git blob sha1 for the
        rest), so files without a catalog sha256 are verified against that instead."""
        snapshot = self.hf_snapshot
        return snapshot is not None and COMMIT_PATTERN.fullmatch(snapshot[1]) is not None

    @property
    def unhashed_files(self) -> list[str]:
        """Files nothing can verify: no catalog sha256, and no hub hash (not pinned)."""
        if self.hub_pinned:
            return []
        return [f.path for f in self.files if f.sha256 is None]

    @property
    def size_bytes(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]


class CatalogFile(_Strict):
    format: Literal[1] = CATALOG_FORMAT
    type: str = Field(pattern=NAME_PATTERN)
    models: list[CatalogEntry]

    @model_validator(mode="after")
    def _types_match(self) -> CatalogFile:
        for entry in self.models:
            if entry.type != self.type:
                raise ValueError(
                    f"entry {entry.name!r} has type {entry.type!r} in a catalog file of type "
                    f"{self.type!r}; keep one type per file"
                )
        names = [e.name for e in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names listed twice: {', '.join(dupes)}")
        return self
