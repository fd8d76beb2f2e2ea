import pytest

from mlplatform.artifacts import (
    atomic_write_bytes,
    staged_directory,
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
    from mlplatform.artifacts import atomic_path

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half written")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


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
