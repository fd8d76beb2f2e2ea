"""Fetching and verifying model files.

http(s): into `<file>.part`, resumed with an HTTP Range request after an interruption, retried
with exponential backoff, a timeout on every read, the free disk space checked first, the sha256
checked, then renamed into place atomically; a file with the wrong hash is moved to
`<models dir>/.quarantine/` and never used. Hugging Face files go through `hf_hub_download` (its
cache, resume and `HF_HUB_OFFLINE`). Offline, nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlplatform.api import atomic_write_json, sha256_file, storage_errors

from .errors import DownloadError, HashMismatchError, UnsafeModelError

log = logging.getLogger(__name__)

QUARANTINE_DIR = ".quarantine"
VERIFIED_CACHE = ".verified.json"
# a 4xx other than these is final (no retry): the URL is wrong, not the network
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class DownloadPolicy:
    timeout: float = 30.0  # seconds without progress before a read is abandoned
    retries: int = 3  # further attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    chunk_size: int = 1 << 20
    progress: bool = True
    # keep this much free beyond the file itself
    free_space_margin: int = 64 << 20


def local_path(models_dir: Path, entry_name: str, relative: str) -> Path:
    """`<models_dir>/<entry>/<relative>`, refused when it resolves outside the models dir (a
    symlink out, say); the catalog schema already refused `..` and absolute paths."""
    root = models_dir.resolve()
    candidate = models_dir / entry_name / relative
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise UnsafeModelError(
            f"model {entry_name!r}: file {relative!r} resolves to {resolved}, outside the models "
            f"directory {root}",
            "remove the symlink (or the entry's path) that points out of the models directory",
        )
    return candidate


def check_snapshot_path(root: Path, relative: str, entry_name: str) -> Path:
    """A file inside a Hugging Face snapshot directory, refusing a path that leaves it."""
    path = root / relative
    blobs = root.parent.parent  # <repo cache>/snapshots/<rev>/ -> <repo cache>
    if not path.resolve().is_relative_to(blobs.resolve()):
        raise UnsafeModelError(
            f"model {entry_name!r}: file {relative!r} resolves outside its Hugging Face cache",
            "clear the hub cache entry and download it again",
        )
    return path


# --- verification -----------------------------------------------------------------------------


def _verified_cache_path(models_dir: Path) -> Path:
    return models_dir / VERIFIED_CACHE


def _read_verified(models_dir: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(_verified_cache_path(models_dir).read_text())
        if isinstance(data, dict):
            return data
    return {}


def file_digest(path: Path, models_dir: Path | None = None) -> str:
    """sha256 of `path`, remembered in `<models_dir>/.verified.json` by (size, mtime) so a large
    file is hashed once, not on every load (Nataili's sidecar idea, in one file)."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns]
    cache = _read_verified(models_dir) if models_dir is not None else {}
    known = cache.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and known.get("sha256"):
        return known["sha256"]
    digest = sha256_file(path)
    if models_dir is not None:
        cache[key] = {"stamp": stamp, "sha256": digest}
        with contextlib.suppress(Exception):
            atomic_write_json(_verified_cache_path(models_dir), cache)
    return digest


def quarantine(path: Path, models_dir: Path, reason: str) -> Path:
    """Move a bad file out of the way (kept for inspection, never loaded)."""
    target_dir = models_dir / QUARANTINE_DIR
    target = target_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    with storage_errors("quarantine", path):
        target_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    with contextlib.suppress(OSError):
        (target.parent / (target.name + ".reason.txt")).write_text(reason + "\n")
    log.warning("quarantined %s as %s: %s", path, target, reason)
    return target


def _refetch_fix(quarantined: bool) -> str:
    first = ("it is downloaded again on the next load" if quarantined else
             "remove it from the Hugging Face cache (`hf cache delete`) so it is downloaded again")
    return (first + "; if it keeps differing, the file at the source changed or the catalog "
            "entry is wrong: check the source before trusting it")


def verify_file(
    path: Path, *, sha256: str | None, size: int | None, models_dir: Path, what: str,
    quarantine_bad: bool = True,
) -> None:
    """Raise HashMismatchError (after quarantining the file) unless it has the catalog's size and
    sha256. An unhashed file is not checked here: the manager refuses it unless opted out."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problem = f"{what}: {path} has {actual_size} bytes, the catalog says {size}"
        moved = quarantine(path, models_dir, problem) if quarantine_bad else None
        raise HashMismatchError(problem + (f"; moved to {moved}" if moved else ""),
                                _refetch_fix(moved is not None))
    if sha256 is None:
        return
    digest = file_digest(path, models_dir if quarantine_bad else None)
    if digest != sha256:
        problem = f"{what}: {path} has sha256 {digest}, the catalog says {sha256}"
        moved = quarantine(path, models_dir, problem) if quarantine_bad else None
        raise HashMismatchError(problem + (f"; quarantined as {moved}" if moved else ""),
                                _refetch_fix(moved is not None))


# --- http(s) ----------------------------------------------------------------------------------


def _check_free_space(directory: Path, needed: int | None, policy: DownloadPolicy, url: str) -> None:
    if needed is None:
        return
    free = shutil.disk_usage(directory).free
    if free < needed + policy.free_space_margin:
        raise DownloadError(
            f"not enough disk space for {url}: {needed / 2**20:.1f} MiB needed "
            f"(+{policy.free_space_margin / 2**20:.0f} MiB margin), {free / 2**20:.1f} MiB free "
            f"in {directory}",
            "free some space or point manager.models_dir at a larger disk",
        )


def _progress(total: int | None, initial: int, label: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not enabled, leave=False,
    )


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "mlplatform-managers/0.1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked by the schema


def _total_from(response, offset: int) -> int | None:
    """The full file's size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        return int(length) + (offset if response.status == 206 else 0)
    return None


def _transfer(url: str, part: Path, policy: DownloadPolicy, label: str, size: int | None) -> None:
    """One attempt: append to `part` from where it stops; raise on an incomplete transfer."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # a stale .part longer than the file: start over
        part.unlink()
        offset = 0
    try:
        response = _open(url, offset, policy.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the .part may be complete
            return
        raise
    with response:
        if offset and response.status != 206:
            log.info("%s: the server ignored the Range request; starting over", url)
            offset = 0
        total = _total_from(response, offset)
        mode = "ab" if offset else "wb"
        received = offset
        with open(part, mode) as out, _progress(total, offset, label, policy.progress) as bar:
            while True:
                chunk = response.read(policy.chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise http.client.IncompleteRead(b"", total - received)


def fetch_url(
    url: str, dest: Path, *, sha256: str | None, size: int | None, models_dir: Path,
    policy: DownloadPolicy = DownloadPolicy(), what: str = "",
) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify it, and rename it into place."""
    label = what or dest.name
    with storage_errors("create the directory", dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    _check_free_space(dest.parent, None if size is None else max(size - have, 0), policy, url)
    delay = policy.backoff
    last: Exception | None = None
    for attempt in range(policy.retries + 1):
        try:
            _transfer(url, part, policy, label, size)
            last = None
            break
        except urllib.error.HTTPError as exc:
            last = exc
            if exc.code not in _RETRY_STATUS:
                raise DownloadError(
                    f"{label}: {url} answered HTTP {exc.code} {exc.reason}",
                    "check the URL in the catalog entry (or that the file still exists there)",
                ) from exc
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            last = exc
        except OSError as exc:  # the disk, not the network: out of space, permissions
            with storage_errors("write", part):
                raise exc
        if attempt < policy.retries:
            got = part.stat().st_size if part.exists() else 0
            log.warning("%s: attempt %d failed (%s); %d bytes so far, retrying in %.1fs",
                        label, attempt + 1, last, got, delay)
            time.sleep(delay)
            delay *= 2
    if last is not None:
        raise DownloadError(
            f"{label}: downloading {url} failed after {policy.retries + 1} attempt(s): {last}",
            "check the network and retry: the partial file is kept and the next attempt resumes "
            "it (manager.download_timeout / manager.download_retries give more patience)",
        ) from last
    verify_file(part, sha256=sha256, size=size, models_dir=models_dir, what=label)
    with storage_errors("move the finished download into place at", dest):
        os.replace(part, dest)
    if sha256 is not None:  # remember the hash of the final path
        file_digest(dest, models_dir)
    return dest


# --- Hugging Face -----------------------------------------------------------------------------


def fetch_hf(
    repo: str, filename: str, revision: str, *, cache_dir: str | None, offline: bool, what: str
) -> Path:
    """A file of a hub repo through huggingface_hub's cache (downloading it unless offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(
            repo, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline,
        ))
    except LocalEntryNotFoundError as exc:
        raise DownloadError(
            f"{what}: {filename} of {repo}@{revision} is not in the Hugging Face cache and "
            + ("offline mode is on" if offline else "the hub could not be reached"),
            "go online once (unset HF_HUB_OFFLINE, manager.offline=false) to download it, "
            "or copy the file into the cache",
        ) from exc
    except (EntryNotFoundError, RepositoryNotFoundError) as exc:
        raise DownloadError(
            f"{what}: {filename} of {repo}@{revision} does not exist on the hub",
            "check hf_repo, hf_filename and hf_revision in the catalog entry",
        ) from exc
    except OSError as exc:
        raise DownloadError(f"{what}: fetching {filename} of {repo} failed: {exc}",
                            "check the network and retry") from exc


def hf_cached(repo: str, filename: str, revision: str, cache_dir: str | None) -> Path | None:
    """The cached file, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def git_blob_sha1(path: Path) -> str:
    """git's object id of a file's content (sha1 of "blob <size>\\0" + content): the hub's ETag
    of a file stored in git rather than LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_published_hash(path: Path) -> tuple[str, str] | None:
    """("sha256" or "git-sha1", hex) the hub published for a file in huggingface_hub's cache.

    The cache stores a file's content as `blobs/<ETag>` (a snapshot file links there), and the
    hub's ETag of a file is its sha256 when it is stored in LFS, its git blob sha1 otherwise;
    None when `path` is not laid out that way (e.g. a copied file)."""
    blob = path.resolve()
    if blob.parent.name != "blobs":
        return None
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return "sha256", blob.name
    if re.fullmatch(r"[0-9a-f]{40}", blob.name):
        return "git-sha1", blob.name
    return None


def verify_hub_file(path: Path, *, size: int | None, models_dir: Path, what: str) -> None:
    """A file of a commit-pinned Hugging Face entry checked against the hash the hub published
    for it (not quarantined: it lives in the hub's cache). A file that cannot be checked is
    refused, as an unhashed one would be."""
    verify_file(path, sha256=None, size=size, models_dir=models_dir, what=what,
                quarantine_bad=False)
    published = hub_published_hash(path)
    if published is None:
        raise UnsafeModelError(
            f"{what}: {path} is not a huggingface_hub cache file (snapshots/ linking to "
            "blobs/<hash>), so the hash the hub published for it cannot be checked",
            "let the manager download it into the Hugging Face cache, or add the file's sha256 "
            "to the catalog entry",
        )
    kind, expected = published
    actual = file_digest(path, models_dir) if kind == "sha256" else git_blob_sha1(path)
    if actual != expected:
        raise HashMismatchError(
            f"{what}: {path} has {kind} {actual}, the hub published {expected} for it",
            _refetch_fix(False),
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
