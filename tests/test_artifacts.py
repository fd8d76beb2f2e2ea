import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlplatform
import mlplatform.artifacts as artifacts
from mlplatform.artifacts import (
    MANIFEST_FORMAT,
    artifact_lock,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_manifest,
    remove_stale_staging,
    require_keys,
    staged_directory,
    storage_errors,
    verify_artifact,
    write_manifest,
)
from mlplatform.errors import ArtifactError


def _artifact(tmp_path):
    directory = tmp_path / "artifact"
    directory.mkdir()
    (directory / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (directory / "sub").mkdir()
    (directory / "sub" / "config.json").write_text("{}")
    write_manifest(directory, {"what": "test"})
    return directory


def test_manifest_lists_every_file_and_verifies(tmp_path):
    directory = _artifact(tmp_path)
    manifest = verify_artifact(directory)
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    assert manifest["what"] == "test"


def test_truncated_file_is_detected(tmp_path):
    directory = _artifact(tmp_path)
    data = (directory / "weights.bin").read_bytes()
    (directory / "weights.bin").write_bytes(data[:-10])
    with pytest.raises(ArtifactError, match="truncated"):
        verify_artifact(directory)


def test_altered_file_is_detected(tmp_path):
    directory = _artifact(tmp_path)
    data = bytearray((directory / "weights.bin").read_bytes())
    data[100] ^= 0xFF
    (directory / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        verify_artifact(directory)


def test_missing_file_and_missing_manifest_are_detected(tmp_path):
    directory = _artifact(tmp_path)
    (directory / "sub" / "config.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify_artifact(directory)
    (directory / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not a complete artifact"):
        verify_artifact(directory)


def test_failed_atomic_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half written")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def _record_fsyncs(monkeypatch):
    """Record (path, whether the final name existed yet) for every os.fsync call."""
    calls = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_atomic_write_flushes_data_before_publishing_and_the_rename_after(tmp_path, monkeypatch):
    calls = _record_fsyncs(monkeypatch)
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"weights")
    # the data of the temporary file first (it still has its temporary name), then the
    # directory holding the new name; a power cut can then never leave an empty model.bin
    assert len(calls) == 2
    assert Path(calls[0]).parent == tmp_path and Path(calls[0]).name.endswith(".tmp")
    assert calls[1] == str(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_staged_directory_flushes_every_file_before_the_swap(tmp_path, monkeypatch):
    final = tmp_path / "out"
    calls = _record_fsyncs(monkeypatch)
    with staged_directory(final) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "w.bin").write_bytes(b"x")
        (staging / "a.txt").write_text("one")
    flushed = [Path(c) for c in calls]
    names = {p.name for p in flushed if ".staging" in str(p)}
    assert {"w.bin", "a.txt", "sub"} <= names
    assert flushed[-1] == tmp_path  # the swap itself made durable last


def test_staged_directory_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    with staged_directory(final) as staging:
        (staging / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), staged_directory(final) as staging:
        (staging / "a.txt").write_text("two")
        raise RuntimeError("interrupted")
    assert (final / "a.txt").read_text() == "one"
    with staged_directory(final) as staging:
        (staging / "b.txt").write_text("three")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# --- shared caches: locks, atomic exchange, stale staging, permissions, malformed manifests -----

LINUX = sys.platform.startswith("linux")
SRC = str(Path(mlplatform.__file__).resolve().parents[1])


def _python(script: str, *args: object) -> subprocess.Popen:
    """A real interpreter running `script` against this checkout's mlplatform."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def _wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline()
    if line.strip() != expected:
        proc.kill()
        raise AssertionError(f"child said {line!r}; stderr: {proc.communicate()[1]}")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


def _leftovers(parent: Path) -> list[str]:
    """Everything beside the artifacts that a finished build should not leave."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name != ".locks")


WRITER = """
    import sys, time
    from pathlib import Path
    from mlplatform.artifacts import artifact_lock, staged_directory, write_manifest

    final, who, rounds, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.002)
    for i in range(rounds):
        with artifact_lock(final), staged_directory(final) as tmp:
            # the same inputs give the same files (a cache keyed by its inputs); only the
            # manifest says which build this is
            (tmp / "weights.bin").write_bytes(bytes(range(256)) * 64)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "config.json").write_text('{"layers": 3}')
            write_manifest(tmp, {"build": f"{who}-{i}"})
        time.sleep(0.003)
"""


@pytest.mark.skipif(not LINUX, reason="the gapless exchange needs renameat2 (Linux)")
def test_concurrent_rebuilds_never_expose_a_missing_artifact(tmp_path):
    final, go = tmp_path / "cache" / "model", tmp_path / "go"
    writers = [_python(WRITER, final, f"w{n}", 15, go) for n in range(3)]
    go.touch()
    manifest = final / "manifest.json"
    missing, failures, builds, checks = 0, [], set(), 0
    deadline = time.monotonic() + 25
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        if not builds and not final.exists():
            continue  # nothing published yet
        for _ in range(50):  # cheap checks in a tight loop catch even a microsecond-wide gap
            checks += 1
            missing += not os.path.isfile(manifest)
        checks += 1
        try:
            builds.add(verify_artifact(final)["build"])
        except ArtifactError as exc:
            if "missing" in exc.problem or "not a complete artifact" in exc.problem:
                missing += 1
            else:
                failures.append(exc.problem)
    for w in writers:
        _finish(w)
    assert missing == 0, f"{missing} of {checks} checks found no complete artifact"
    assert failures == []
    assert len(builds) >= 3, f"the reader saw too few rebuilds to prove anything: {builds}"
    assert verify_artifact(final)["build"].endswith("-14")
    assert _leftovers(final.parent) == []


BUILDER = """
    import sys, time
    from pathlib import Path
    from mlplatform.artifacts import (
        artifact_lock, remove_stale_staging, staged_directory, verify_artifact, write_manifest,
    )
    from mlplatform.errors import ArtifactError

    final, log, ready, who = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    (ready / who).touch()
    while len(list(ready.iterdir())) < 2:  # start both at once, so one must wait for the other
        time.sleep(0.002)
    with artifact_lock(final):
        remove_stale_staging(final)
        try:
            verify_artifact(final)
            print("reused")
        except ArtifactError:
            time.sleep(0.4)  # a slow compile
            with staged_directory(final) as tmp:
                (tmp / "model.bin").write_bytes(b"compiled")
                write_manifest(tmp, {"built_by": who})
            with open(log, "a") as handle:
                handle.write(f"built by {who}\\n")
            print("built")
"""


def test_lock_and_recheck_build_an_artifact_once(tmp_path):
    final, log, ready = tmp_path / "cache" / "model", tmp_path / "builds.log", tmp_path / "ready"
    ready.mkdir()
    procs = [_python(BUILDER, final, log, ready, who) for who in ("a", "b")]
    results = [_finish(p) for p in procs]
    assert len(log.read_text().splitlines()) == 1
    assert sorted(out.strip() for out, _ in results) == ["built", "reused"]
    waited = [err for out, err in results if out.strip() == "reused"][0]
    assert "waiting for another process building model" in waited
    assert (final.parent / ".locks" / "model.lock").is_file()
    assert verify_artifact(final)["built_by"] in {"a", "b"}


HOLDER = """
    import sys, time
    from mlplatform.artifacts import artifact_lock
    with artifact_lock(sys.argv[1]):
        print("READY", flush=True)
        time.sleep(60)
"""


def test_lock_timeout_names_the_wait_and_a_killed_holder_frees_it(tmp_path, caplog):
    final = tmp_path / "model"
    holder = _python(HOLDER, final)
    try:
        _wait_for_line(holder, "READY")
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="mlplatform.artifacts"):
            with pytest.raises(ArtifactError, match="held the lock on model") as info:
                with artifact_lock(final, timeout=0.3):
                    pass
        assert 0.25 <= time.monotonic() - started < 5
        assert "wait" in info.value.fix and "timeout" in info.value.fix
        waits = [r for r in caplog.records if "waiting for another process building" in r.message]
        assert len(waits) == 1
    finally:
        _kill(holder)
    with artifact_lock(final, timeout=5) as lock_file:  # the kernel dropped the dead holder's lock
        assert lock_file == final.parent / ".locks" / "model.lock"


PARTIAL = """
    import sys, time
    from mlplatform.artifacts import staged_directory
    with staged_directory(sys.argv[1]) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 1000)
        print("READY", flush=True)
        time.sleep(60)
"""


def test_sigkilled_build_leaves_staging_that_remove_stale_staging_clears(tmp_path):
    cache = tmp_path / "cache"
    final = cache / "model"
    with staged_directory(final) as tmp:
        (tmp / "old.bin").write_bytes(b"old")
        write_manifest(tmp, {})
    # leftovers of other artifacts whose names start the same way must survive
    keep = [cache / ".model.v2.abcd1234.staging", cache / ".modelx.abcd1234.staging"]
    legacy = [cache / ".model.123.456.old", cache / ".model.123-456.old"]
    for path in keep + legacy:
        path.mkdir()
    child = _python(PARTIAL, final)
    try:
        _wait_for_line(child, "READY")
    finally:
        _kill(child)
    assert child.returncode == -signal.SIGKILL
    staged = [p for p in cache.iterdir() if p.name not in {p.name for p in keep + legacy}]
    staged = [p for p in staged if p.name.startswith(".model.") and p.name.endswith(".staging")]
    assert len(staged) == 1 and (staged[0] / "half.bin").is_file()
    assert verify_artifact(final) and (final / "old.bin").read_bytes() == b"old"

    with artifact_lock(final):
        removed = remove_stale_staging(final)
        assert sorted(removed) == sorted(staged + legacy)
        assert remove_stale_staging(final) == []
        with staged_directory(final) as tmp:
            (tmp / "new.bin").write_bytes(b"new")
            write_manifest(tmp, {})
    assert set(verify_artifact(final)["files"]) == {"new.bin"}
    assert _leftovers(cache) == sorted(p.name for p in keep)
    assert remove_stale_staging(tmp_path / "nowhere" / "model") == []


def _two_builds(final):
    with staged_directory(final) as tmp:
        (tmp / "a.txt").write_text("one")
        write_manifest(tmp, {"n": 1})
    with staged_directory(final) as tmp:
        (tmp / "b.txt").write_text("two")
        write_manifest(tmp, {"n": 2})


@pytest.mark.skipif(not LINUX, reason="renameat2 is Linux-only")
def test_replacing_an_artifact_uses_the_exchange(tmp_path, monkeypatch):
    def no_gap_allowed(*args):
        raise AssertionError("fell back to two renames")

    monkeypatch.setattr(artifacts, "_replace_with_two_renames", no_gap_allowed)
    final = tmp_path / "out"
    _two_builds(final)
    assert verify_artifact(final)["n"] == 2 and not (final / "a.txt").exists()
    with pytest.raises(RuntimeError), staged_directory(final) as tmp:
        (tmp / "c.txt").write_text("three")
        raise RuntimeError("interrupted")
    assert verify_artifact(final)["n"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_without_renameat2_falls_back_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "_renameat2", lambda: None)
    final = tmp_path / "out"
    _two_builds(final)
    assert verify_artifact(final)["n"] == 2 and sorted(p.name for p in final.iterdir()) == [
        "b.txt",
        "manifest.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_artifact_created_by_another_process_meanwhile_is_exchanged(tmp_path):
    final = tmp_path / "out"
    with staged_directory(final) as tmp:
        (tmp / "mine.txt").write_text("mine")
        final.mkdir()  # another process published it while we were building
        (final / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in final.iterdir()) == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_verify_checks_again_when_the_artifact_is_replaced_meanwhile(tmp_path, monkeypatch):
    final = tmp_path / "out"
    with staged_directory(final) as tmp:
        (tmp / "w.bin").write_bytes(b"first build")
        write_manifest(tmp, {"n": 1})
    real_read = artifacts.read_manifest
    calls = []

    def read_then_rebuild(directory):
        manifest = real_read(directory)
        if not calls:  # another process swaps in a new build between manifest and files
            with staged_directory(final) as tmp:
                (tmp / "w.bin").write_bytes(b"second build, other size")
                write_manifest(tmp, {"n": 2})
        calls.append(manifest["n"])
        return manifest

    monkeypatch.setattr(artifacts, "read_manifest", read_then_rebuild)
    assert verify_artifact(final)["n"] == 2
    assert calls == [1, 2]


@pytest.mark.parametrize(
    ("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]
)
def test_modes_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        final = tmp_path / "cache" / "model"
        with artifact_lock(final), staged_directory(final) as tmp:
            (tmp / "w.bin").write_bytes(b"w")
            write_manifest(tmp, {})
        note = atomic_write_text(tmp_path / "note.txt", "hello")
    finally:
        os.umask(old)

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(final) == dir_mode
    assert mode(final / "manifest.json") == file_mode
    assert mode(note) == file_mode
    assert mode(final.parent / ".locks") == dir_mode
    assert mode(final.parent / ".locks" / "model.lock") == file_mode


def test_umask_is_read_without_changing_it():
    old = os.umask(0o027)
    try:
        assert artifacts._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def _manifest_dir(tmp_path, content):
    directory = tmp_path / "artifact"
    directory.mkdir(exist_ok=True)
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (directory / "manifest.json").write_bytes(raw)
    return directory


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2], "JSON list, not an object"),
        ("text", "JSON str, not an object"),
        ({"files": {}}, "no manifest_format"),
        (
            {"manifest_format": 2, "files": {}},
            "manifest_format 2; this version of mlplatform reads format 1",
        ),
        ({"manifest_format": "1", "files": {}}, "manifest_format '1'"),
        ({"manifest_format": True, "files": {}}, "manifest_format True"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
    ],
)
def test_read_manifest_refuses_other_formats(tmp_path, content, match):
    directory = _manifest_dir(tmp_path, content)
    with pytest.raises(ArtifactError, match=match) as info:
        read_manifest(directory)
    assert "rebuild" in info.value.fix
    with pytest.raises(ArtifactError):
        verify_artifact(directory)


GOOD_SHA = "0" * 64


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ("weights.bin", "'files' of type str"),
        (["weights.bin"], "'files' of type list"),
        ({"w.bin": "abc"}, r"files\['w.bin'\], is a str"),
        ({"w.bin": {"bytes": 3}}, "has no 'sha256'"),
        ({"w.bin": {"sha256": GOOD_SHA}}, "has no 'bytes'"),
        ({"w.bin": {"bytes": "3", "sha256": GOOD_SHA}}, "'bytes' of type str"),
        ({"w.bin": {"bytes": True, "sha256": GOOD_SHA}}, "'bytes' of type bool"),
        ({"w.bin": {"bytes": 3, "sha256": 5}}, "'sha256' of type int"),
        ({"w.bin": {"bytes": -1, "sha256": GOOD_SHA}}, "impossible size or sha256"),
        ({"w.bin": {"bytes": 3, "sha256": "abc"}}, "impossible size or sha256"),
        ({"../w.bin": {"bytes": 3, "sha256": GOOD_SHA}}, "outside the artifact"),
        ({"/etc/passwd": {"bytes": 3, "sha256": GOOD_SHA}}, "outside the artifact"),
        (None, "has no 'files'"),
    ],
)
def test_malformed_files_table_is_an_artifact_error(tmp_path, files, match):
    manifest = {"manifest_format": MANIFEST_FORMAT}
    if files is not None:
        manifest["files"] = files
    directory = _manifest_dir(tmp_path, manifest)
    (directory / "w.bin").write_bytes(b"abc")
    with pytest.raises(ArtifactError, match=match):
        verify_artifact(directory)


def test_listed_directory_is_reported_missing_not_crashing(tmp_path):
    directory = _manifest_dir(
        tmp_path,
        {
            "manifest_format": MANIFEST_FORMAT,
            "files": {"w.bin/x": {"bytes": 1, "sha256": GOOD_SHA}},
        },
    )
    (directory / "w.bin").write_bytes(b"a file where a directory should be")
    with pytest.raises(ArtifactError, match="missing"):
        verify_artifact(directory)


def test_require_keys_names_the_missing_or_mistyped_key(tmp_path):
    manifest = {"kind": "compiled", "shapes": [1, 2], "count": 3, "ratio": 0.5, "flag": True}
    spec = {"kind": str, "shapes": (list, tuple), "count": int, "ratio": (int, float), "flag": bool}
    assert require_keys(manifest, spec, tmp_path) is manifest
    with pytest.raises(ArtifactError, match="has no 'backend'") as info:
        require_keys(manifest, {"backend": str}, tmp_path)
    assert str(tmp_path) in info.value.problem and "rebuild" in info.value.fix
    with pytest.raises(ArtifactError, match="'count' of type str .*expected int"):
        require_keys({**manifest, "count": "3"}, {"count": int}, "m")
    with pytest.raises(ArtifactError, match="'count' of type bool"):
        require_keys({**manifest, "count": True}, {"count": int}, "m")
    with pytest.raises(ArtifactError, match="expected list or tuple"):
        require_keys({**manifest, "shapes": "1x2"}, {"shapes": (list, tuple)}, "m")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_names_the_fix():
    with pytest.raises(ArtifactError) as info, storage_errors("write", "/dev/full"):
        with open("/dev/full", "wb") as handle:
            handle.write(b"x" * 10)
    problem, fix = info.value.problem, info.value.fix
    assert problem.startswith("could not write /dev/full") and "No space left" in problem
    assert "ENOSPC" in problem
    assert "free disk space" in fix and "another cache/output directory" in fix
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EDQUOT, "free disk space"),
        (errno.EFBIG, "free disk space"),
        (errno.EACCES, "writable for this user"),
        (errno.EPERM, "writable for this user"),
        (errno.EROFS, "writable for this user"),
        (errno.EIO, "check that"),
    ],
)
def test_storage_errors_fix_depends_on_errno(tmp_path, code, fix):
    target = tmp_path / "cache" / "model.bin"  # the cache dir does not exist yet
    with pytest.raises(ArtifactError) as info, storage_errors("save the model to", target):
        raise OSError(code, os.strerror(code), str(target))
    assert info.value.problem.startswith(f"could not save the model to {target}: ")
    assert os.strerror(code) in info.value.problem and fix in info.value.fix
    if fix != "free disk space":
        assert str(tmp_path) in info.value.fix  # the nearest directory that exists
    assert info.value.__cause__.errno == code
    with pytest.raises(KeyError), storage_errors("write", target):
        raise KeyError("not a storage problem")


def test_helpers_raise_artifact_errors_for_storage_failures(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ArtifactError, match="could not create a temporary file beside"):
        atomic_write_text(blocker / "x.json", "{}")  # parent is a file
    with pytest.raises(ArtifactError, match="could not create a staging directory"):
        with staged_directory(blocker / "model"):
            pass

    target = tmp_path / "model.bin"
    atomic_write_text(target, "old")
    with pytest.raises(ArtifactError, match="free disk space"), atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert target.read_text() == "old"

    final = tmp_path / "out"
    _two_builds(final)
    with pytest.raises(ArtifactError, match="could not write the artifact"):
        with staged_directory(final) as tmp:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp / "w.bin"))
    with pytest.raises(FileNotFoundError):  # the caller's own errors are not relabelled
        with staged_directory(final):
            open(tmp_path / "no-such-input")
    assert verify_artifact(final)["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "model.bin", "out"]
