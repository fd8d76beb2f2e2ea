"""Artifacts on disk: atomic writes, manifest.json with checksums, verification on load.

Every plugin writes compiled modules, checkpoints and exports through these helpers, so an
interrupted write never leaves a half file under the final name and a damaged file is caught
before it is used.

A cache directory may be shared by several processes at once (parallel jobs, a Hydra multirun).
The intended pattern for building one artifact there is:

    with artifact_lock(final):                 # one builder per artifact name at a time
        remove_stale_staging(final)            # leftovers of builds that were killed
        try:
            manifest = verify_artifact(final)  # re-check: another process may have built it
        except ArtifactError:
            with staged_directory(final) as tmp:
                ...                            # write the files into tmp
                write_manifest(tmp, info)

Readers need no lock: on Linux an existing artifact is replaced with one atomic exchange, so
`final` always names a complete directory once it exists. Write failures (disk full, read-only
or foreign directories) surface as ArtifactError with the fix spelled out, the OSError chained.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import filelock

from .errors import ArtifactError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
LOCKS_DIR = ".locks"
STAGING_SUFFIX = ".staging"

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_EXCHANGE_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})

# renameat2(2) constants and syscall numbers, for libcs without the wrapper (glibc < 2.28, musl)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {
    "x86_64": 316,
    "aarch64": 276,
    "arm64": 276,
    "riscv64": 276,
    "loongarch64": 276,
    "i386": 353,
    "i686": 353,
    "armv7l": 382,
    "armv6l": 382,
    "ppc64le": 357,
    "ppc64": 357,
    "s390x": 347,
}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --- storage errors ---------------------------------------------------------------------------


def _existing_dir(path: Path) -> Path:
    """The directory a permission or space problem is about: `path` or its nearest existing parent."""
    candidate = path
    while not candidate.is_dir() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def _storage_fix(exc: OSError, path: Path) -> str:
    """What to do about a failed write, chosen by errno so the advice fits the cause."""
    where = _existing_dir(Path(exc.filename) if isinstance(exc.filename, str) else path)
    if exc.errno in _NO_SPACE:
        return (
            f"free disk space on the filesystem holding {where} (or raise the quota), or choose "
            "another cache/output directory on a filesystem with room"
        )
    if exc.errno in _NO_PERMISSION:
        return f"make {where} writable for this user, or choose another cache/output directory"
    return f"check that {where} is a working, writable local directory, then retry"


def _os_message(exc: OSError, path: Path) -> str:
    """The OS's own words plus the errno name, and the file it was about when that differs."""
    if exc.strerror is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    message = f"{exc.strerror} [{name}]"
    if exc.filename is not None and os.fspath(exc.filename) != os.fspath(path):
        message += f" ({exc.filename})"
    return message


@contextlib.contextmanager
def storage_errors(
    action: str, path: str | os.PathLike, *, only: frozenset[int] | None = None
) -> Iterator[None]:
    """Turn an OSError raised inside into ArtifactError that says what failed and how to fix it.

    `action` completes "could not ACTION PATH" (e.g. "write", "create the lock for"). The fix
    depends on errno: out of space or quota, no permission or read-only, anything else. `only`
    limits the conversion to those errnos, for blocks that also run the caller's own code.
    """
    try:
        yield
    except OSError as exc:
        if only is not None and exc.errno not in only:
            raise
        where = Path(path)
        raise ArtifactError(
            f"could not {action} {where}: {_os_message(exc, where)}", _storage_fix(exc, where)
        ) from exc


# --- permissions ------------------------------------------------------------------------------


def _umask() -> int:
    """The process umask, read without setting it where possible (setting it races with threads)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _chmod_like_new(path: str | os.PathLike, *, directory: bool) -> None:
    """mkdtemp/mkstemp create 0700/0600; give the path the mode a plain mkdir/open would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


# --- the per-artifact lock --------------------------------------------------------------------


def lock_path(final_dir: str | os.PathLike) -> Path:
    """Where the lock of an artifact lives: `<parent>/.locks/<name>.lock`, outside the artifact."""
    final = Path(final_dir)
    return final.parent / LOCKS_DIR / f"{final.name}.lock"


@contextlib.contextmanager
def artifact_lock(final_dir: str | os.PathLike, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the inter-process lock of one artifact, so only one process builds it at a time.

    Blocks while another process holds it (logging once that it waits); `timeout` seconds
    (None: forever) raise ArtifactError. Once the lock is held the caller must check the cache
    again: the process it waited for has usually just built the artifact. The lock is not
    re-entrant (taking it twice in one process waits for itself); on local filesystems the
    kernel releases it when its holder dies, even by SIGKILL. Yields the lock file's path.
    """
    path = lock_path(final_dir)
    with storage_errors("create the lock directory", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), mode=0o666 & ~_umask())
    with storage_errors("take the lock", path):
        _acquire(lock, Path(final_dir).name, path, timeout)
    try:
        yield path
    finally:
        lock.release()


def _acquire(lock: Any, name: str, path: Path, timeout: float | None) -> None:
    """Try once, then say who we wait for (a silent multi-minute wait looks like a hang)."""
    try:
        lock.acquire(timeout=0)
        return
    except filelock.Timeout:
        log.warning("waiting for another process building %s (lock %s)", name, path)
    try:
        lock.acquire(timeout=-1 if timeout is None else timeout)
    except filelock.Timeout as exc:
        raise ArtifactError(
            f"another process has held the lock on {name} for over {timeout:g}s ({path})",
            "wait for that build to finish and retry, or allow a longer wait (timeout); the "
            "lock frees itself when its holder exits, so look for a hung process using this cache",
        ) from exc


# --- durability -------------------------------------------------------------------------------
# A rename is atomic but not durable: after a power cut the new name can point at a file whose
# data never reached the disk (zero length on ext4 with delayed allocation). So the data is
# flushed before the rename publishes it, and the directory after, so the rename itself sticks.


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """fsync a directory entry table; a no-op where the OS cannot open directories (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` (symlinks are not followed)."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                _fsync_file(path)
        _fsync_directory(Path(directory))


# --- atomic files -----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    The temporary file gets the mode a plain open() would give (umask honoured). Running out of
    space inside the block, and any OSError of the rename, raise ArtifactError.
    """
    final = Path(path)
    with storage_errors("create a temporary file beside", final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        _chmod_like_new(tmp_name, directory=False)
    tmp = Path(tmp_name)
    try:
        with storage_errors("write", final, only=_NO_SPACE):
            yield tmp
            _fsync_file(tmp)
        with storage_errors("move the finished file into place at", final):
            os.replace(tmp, final)
            _fsync_directory(final.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` so readers see the old file or the new one, never half of it."""
    with storage_errors("write", path), atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """atomic_write_bytes for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """atomic_write_text for JSON, sorted and indented so artifacts diff cleanly."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# --- staged directories -----------------------------------------------------------------------


@contextlib.contextmanager
def staged_directory(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place when the block succeeds.

    The staging directory `.<name>.<random>.staging` sits beside `final_dir` (same filesystem,
    so the swap is a rename) with the mode mkdir would give. A failure leaves any earlier
    directory at `final_dir` untouched. An existing `final_dir` is replaced with one
    renameat2(RENAME_EXCHANGE), so concurrent readers always find a complete artifact; where
    the OS or filesystem cannot exchange (non-Linux, some network filesystems) it falls back to
    two renames, which leave `final_dir` missing for an instant. The old tree is then deleted.

    Concurrent builders of one artifact should hold `artifact_lock` (see the module docstring);
    a build killed outright leaves its staging directory for `remove_stale_staging`.
    """
    final = Path(final_dir)
    with storage_errors("create a staging directory beside", final):
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{final.name}.", suffix=STAGING_SUFFIX, dir=final.parent)
        )
        _chmod_like_new(staging, directory=True)
    try:
        with storage_errors("write the artifact", final, only=_NO_SPACE):
            yield staging
            _fsync_tree(staging)
        with storage_errors("move the finished artifact into place at", final):
            _swap_into_place(staging, final)
            _fsync_directory(final.parent)
    finally:
        _remove_quietly(staging)


def _swap_into_place(staging: Path, final: Path) -> None:
    """Publish `staging` as `final`; a replaced tree ends up at `staging` for the caller to delete.

    A missing `final` is a plain rename; if another process creates it meanwhile the rename
    fails with ENOTEMPTY/EEXIST and we exchange instead (and rename again if it vanishes).
    """
    for _ in range(5):
        if not os.path.lexists(final):
            try:
                os.replace(staging, final)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        try:
            if _exchange(staging, final):
                return
        except FileNotFoundError:
            if not os.path.lexists(staging):
                raise
            continue
        _replace_with_two_renames(staging, final)
        return
    raise OSError(errno.EBUSY, "another process keeps creating and removing it", str(final))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the OS or filesystem cannot, OSError otherwise."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, else a raw syscall; None off Linux or on unknown architectures."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    func = getattr(libc, "renameat2", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
        func.restype = ctypes.c_int
        return func
    number = _SYS_RENAMEAT2.get(os.uname().machine)
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long

    def via_syscall(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> int:
        return syscall(
            ctypes.c_long(number), ctypes.c_int(olddirfd), ctypes.c_char_p(old),
            ctypes.c_int(newdirfd), ctypes.c_char_p(new), ctypes.c_uint(flags),
        )  # fmt: skip

    return via_syscall


def _replace_with_two_renames(staging: Path, final: Path) -> None:
    """The portable fallback: retire `final`, move `staging` in; readers may see a gap."""
    retired = final.with_name(f".{final.name}.{os.getpid()}-{time.time_ns()}.old")
    os.replace(final, retired)
    try:
        os.replace(staging, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.replace(retired, final)
        raise
    _remove_quietly(retired)


def _remove(path: Path) -> None:
    """Delete a file, link or whole tree; a path already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove_quietly(path: Path) -> None:
    """Best-effort delete for cleanup paths, where an error must not hide the original one."""
    with contextlib.suppress(OSError):
        _remove(path)


def _leftover_pattern(name: str) -> re.Pattern[str]:
    """Names staged_directory leaves for artifact `name` only (the random part has no dot,
    so `.a.b.x.staging` of artifact "a.b" never matches artifact "a")."""
    escaped = re.escape(name)
    return re.compile(rf"\.{escaped}\.(?:[^.]+\.staging|[^.]+\.old|\d+\.\d+\.old)")


def remove_stale_staging(final_dir: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.*.staging` / `.old` siblings that killed builds of this artifact left.

    Call it only while holding `artifact_lock(final_dir)`: then no live process is writing
    under those names (every builder of the artifact holds the same lock), whereas without the
    lock it would delete the staging directory of a build in progress. Returns what it removed.
    """
    final = Path(final_dir)
    pattern = _leftover_pattern(final.name)
    if not final.parent.is_dir():
        return []
    with storage_errors("list the leftovers of interrupted builds in", final.parent):
        siblings = sorted(final.parent.iterdir())
    removed = []
    for path in siblings:
        if pattern.fullmatch(path.name):
            with storage_errors("remove the leftover", path):
                _remove(path)
            removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of interrupted builds of %s", len(removed), final.name)
    return removed


# --- manifests --------------------------------------------------------------------------------


def _payload_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )


def write_manifest(directory: str | os.PathLike, info: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json: `info` plus the size and sha256 of every file in `directory`."""
    from . import __version__

    root = Path(directory)
    with storage_errors("read the files to list in the manifest of", root):
        files = {
            p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in _payload_files(root)
        }
    manifest = {
        **info,
        "manifest_format": MANIFEST_FORMAT,
        "mlplatform_version": __version__,
        "created_unix": int(time.time()),
        "files": files,
    }
    atomic_write_json(root / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Load and sanity-check manifest.json: a JSON object in the format this version reads."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise _no_manifest(directory)
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError as exc:  # removed since is_file()
        raise _no_manifest(directory) from exc
    except OSError as exc:
        raise ArtifactError(
            f"could not read {path}: {_os_message(exc, path)}",
            f"make {path} readable for this user, or delete {directory} and rebuild it",
        ) from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8 at all
        raise ArtifactError(
            f"{path} is not valid JSON ({exc})", "delete the artifact directory and rebuild it"
        ) from exc
    _check_format(manifest, path)
    return manifest


def _no_manifest(directory: str | os.PathLike) -> ArtifactError:
    return ArtifactError(
        f"no {MANIFEST_NAME} in {directory}: this is not a complete artifact",
        "rebuild or re-export it; artifacts are only valid with their manifest",
    )


def _check_format(manifest: Any, path: Path) -> None:
    """Refuse manifests this version would misread: not an object, or another format number."""
    fix = f"delete {path.parent} and rebuild it with this version of mlplatform"
    if not isinstance(manifest, dict):
        raise ArtifactError(
            f"{path} holds a JSON {type(manifest).__name__}, not an object: not a manifest", fix
        )
    if "manifest_format" not in manifest:
        raise ArtifactError(f"{path} has no manifest_format: not an mlplatform manifest", fix)
    found = manifest["manifest_format"]
    if type(found) is not int or found != MANIFEST_FORMAT:
        raise ArtifactError(
            f"{path} has manifest_format {found!r}; this version of mlplatform reads format "
            f"{MANIFEST_FORMAT}",
            fix,
        )


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool does not pass for an int (JSON true is not a count)."""
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def require_keys(
    manifest: dict[str, Any], keys: dict[str, type | tuple[type, ...]], where: str | os.PathLike
) -> dict[str, Any]:
    """Check that `manifest` has each key with a value of the given type(s); returns it.

    For plugins validating their own manifest fields: the ArtifactError names `where` (the
    artifact or manifest), the key and what is wrong, instead of a KeyError deep in a loader.
    """
    fix = f"rebuild {where}: its manifest was written by another version or edited by hand"
    _check_keys(manifest, keys, f"the manifest of {where}", fix)
    return manifest


def _check_keys(
    mapping: dict[str, Any], keys: dict[str, type | tuple[type, ...]], label: str, fix: str
) -> None:
    """require_keys with the wording left to the caller (manifest vs one entry of it)."""
    for key, types in keys.items():
        if key not in mapping:
            raise ArtifactError(f"{label} has no {key!r}", fix)
        value = mapping[key]
        if not _is_instance(value, types):
            raise ArtifactError(
                f"{label} has {key!r} of type {type(value).__name__} ({value!r:.80}), "
                f"expected {_type_names(types)}",
                fix,
            )


def _files_table(manifest: dict[str, Any], root: Path) -> dict[str, tuple[int, str]]:
    """The manifest's `files` as {relative path: (bytes, sha256)}, or ArtifactError if malformed."""
    fix = f"delete {root} and rebuild it (or rebuild with force=true)"
    _check_keys(manifest, {"files": dict}, f"the manifest of {root}", fix)
    table = {}
    for rel, entry in manifest["files"].items():
        label = f"the manifest of {root}, entry files[{rel!r}],"
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts:
            raise ArtifactError(f"{label} points outside the artifact", fix)
        if not isinstance(entry, dict):
            raise ArtifactError(f"{label} is a {type(entry).__name__}, not an object", fix)
        _check_keys(entry, {"bytes": int, "sha256": str}, label, fix)
        if entry["bytes"] < 0 or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            raise ArtifactError(f"{label} has an impossible size or sha256", fix)
        table[rel] = (entry["bytes"], entry["sha256"])
    return table


def _verify_once(root: Path) -> dict[str, Any]:
    """One pass of verify_artifact; raises ArtifactError, never OSError, for missing files."""
    manifest = read_manifest(root)
    fix = f"delete {root} and rebuild it (or rebuild with force=true)"
    for rel, (expected_bytes, expected_sha) in _files_table(manifest, root).items():
        path = root / rel
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"artifact file {path} is missing", fix)
        if info.st_size != expected_bytes:
            raise ArtifactError(
                f"artifact file {path} has {info.st_size} bytes, the manifest says "
                f"{expected_bytes} (truncated or replaced)",
                fix,
            )
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise ArtifactError(f"artifact file {path} could not be read: {exc}", fix) from exc
        if digest != expected_sha:
            raise ArtifactError(f"artifact file {path} does not match its sha256 checksum", fix)
    return manifest


def _identity(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        info = os.stat(path)
        return info.st_dev, info.st_ino
    return None


def verify_artifact(directory: str | os.PathLike) -> dict[str, Any]:
    """Check every file the manifest lists (size, then sha256) and return the manifest.

    Raises ArtifactError naming the first missing, truncated or altered file, or a malformed
    manifest. If another process swapped in a new build while we were checking (the
    directory's inode changed), the mix of old manifest and new files is not damage: check again.
    """
    root = Path(directory)
    attempts = 3
    for attempt in range(attempts):
        before = _identity(root)
        try:
            return _verify_once(root)
        except ArtifactError:
            if attempt == attempts - 1 or before is None or _identity(root) == before:
                raise
            log.debug("%s was replaced while being verified; checking the new one", root)
    raise AssertionError("unreachable")
