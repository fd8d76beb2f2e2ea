"""task=face_restore: a random-weight GFPGAN of the real architecture in the official checkpoint
layout, loaded through the catalog; full mode (detection, alignment, paste-back) through the CLI;
paste-back at given landmarks;
CodeFormer refused until its licence is accepted (and run in aligned mode through the CLI, when
spandrel_extra_arches is there).

Not covered here: detection with real RetinaFace weights (the test's detector reports a face at
every coarse anchor by construction), and restoration quality (random networks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from managers_helpers import (
    FACE_TEMPLATE_512,
    file_entries,
    hydra_dir,
    make_face_detector_weights,
    write_catalog,
)
from mlplatform_managers.images import png_parameters
from PIL import Image

from mlplatform.testing import run_cli

HAS_FACEXLIB = importlib.util.find_spec("facexlib") is not None
HAS_EXTRA_ARCHES = importlib.util.find_spec("spandrel_extra_arches") is not None


def build_in_subprocess(models, codeformer: bool) -> None:
    """The random-weight checkpoints (hundreds of MB) built in a child process: freed memory the
    test process would keep resident skews the RSS measurements of test_manager.py."""
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from managers_helpers import make_tiny_codeformer, make_tiny_gfpgan;"
        "models = Path(sys.argv[2]);"
        "make_tiny_gfpgan(models / 'tiny_gfpgan' / 'GFPGANv1.4.pth');"
        "sys.argv[3] == '1' and make_tiny_codeformer(models / 'tiny_codeformer' / 'codeformer.pth')"
    )
    subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve().parent),
                    str(models), "1" if codeformer else "0"], check=True, timeout=600)


@pytest.fixture(scope="session")
def face_models(tiny_models, tmp_path_factory):
    """tiny_gfpgan (and tiny_codeformer when spandrel_extra_arches is installed) in the tiny
    models dir, listed in a catalog directory of their own with their sha256."""
    models, _catalog = tiny_models
    catalog = tmp_path_factory.mktemp("face_catalog")
    build_in_subprocess(models, HAS_EXTRA_ARCHES)
    write_catalog(catalog, "gfpgan", [{
        "name": "tiny_gfpgan", "type": "gfpgan", "licence": "test", "config": {"scale": 1},
        "description": "random-weight GFPGANv1Clean in the official params_ema layout",
        "files": file_entries(models / "tiny_gfpgan")}])
    if HAS_EXTRA_ARCHES:
        write_catalog(catalog, "codeformer", [{
            "name": "tiny_codeformer", "type": "codeformer", "config": {"scale": 1},
            "licence": "S-Lab License 1.0 (non-commercial use only)",
            "description": "random-weight CodeFormer (1 layer, 16 codes), params_ema layout",
            "files": file_entries(models / "tiny_codeformer")}])
    return models, catalog


@pytest.fixture
def face_env(cli_env, face_models):
    return {**cli_env, "MLPLATFORM_CATALOG_PATH":
            cli_env["MLPLATFORM_CATALOG_PATH"] + ":" + str(face_models[1])}


def cli(tmp_path, env, *args):
    return run_cli("job=infer", "task=face_restore", *args, hydra_dir(tmp_path), cwd=tmp_path,
                   env=env, timeout=300)


def face_like(size: int, seed: int = 0) -> np.ndarray:
    """A smooth, noisy RGB image (uint8) standing in for a face crop."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.6 + 0.3 * x, 0.45 + 0.2 * y, 0.35 + 0.1 * x * y], axis=-1)
    return np.clip(base * 255 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.skipif(not HAS_FACEXLIB, reason="facexlib (extra faces)")
def test_full_mode_end_to_end(tmp_path, face_env):
    """Detection (a RetinaFace whose heads report a face at every coarse anchor), the face
    nearest the centre aligned, restored by the tiny GFPGAN, pasted back into the image upscaled
    2x; everything away from that face is the Lanczos-upscaled input."""
    import cv2

    make_face_detector_weights(tmp_path / "detector", find_faces=True)
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    result = cli(tmp_path, face_env, "model.name=tiny_gfpgan", "task.input=photo.png",
                 "task.detector_dir=detector", "task.only_center_face=true", "task.upscale=2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "run" / "photo_restored.png"
    assert "restored 1 face(s) in photo.png (full)" in result.stdout
    with Image.open(out) as image:
        assert image.mode == "RGB" and image.size == (256, 192)
        array = np.asarray(image).astype(int)
    assert array.min() >= 0 and array.max() <= 255
    background = cv2.resize(photo, (256, 192), interpolation=cv2.INTER_LANCZOS4).astype(int)
    # the centre face's box is about x 41..79, y 26..65 in the input (detector scale 96/640)
    away = np.ones((192, 256), bool)
    away[2 * 16:2 * 76, 2 * 30:2 * 92] = False
    assert np.abs(array[away] - background[away]).max() <= 1
    face = (slice(2 * 38, 2 * 54), slice(2 * 52, 2 * 68))
    assert np.abs(array[face] - background[face]).mean() > 5  # restored, not the input
    params = png_parameters(out)
    assert params["mode"] == "full" and params["faces"] == 1 and params["upscale"] == 2
    assert params["detector"] == "detector" and params["model"] == "tiny_gfpgan"


@pytest.mark.skipif(not HAS_FACEXLIB, reason="facexlib (extra faces)")
def test_paste_back_at_given_landmarks(tmp_path):
    """A face at a chosen position (5 landmarks: the 512 px template scaled by 1/4 and moved):
    the crop handed to the restorer is that square, the restored face lands inside it, and every
    pixel well outside it keeps its exact input value. (The real networks run in the CLI tests.)"""
    from mlplatform_managers.faces import face_helper, restore_in_image

    weights = tmp_path / "facexlib"
    make_face_detector_weights(weights)
    helper = face_helper(weights, "retinaface_mobile0.25", 1, "cpu")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    left, top, scale = 56, 40, 0.25  # the 512 px crop maps onto x 56..184, y 40..168
    landmarks = np.array(FACE_TEMPLATE_512) * scale + [left, top]
    side = 512 * scale
    outside = np.ones(image.shape[:2], bool)
    outside[top - 6:int(top + side) + 6, left - 6:int(left + side) + 6] = False
    centre = (slice(top + 24, int(top + side) - 24), slice(left + 24, int(left + side) - 24))

    magenta = np.array([1.0, 0.0, 1.0], np.float32)
    seen = []

    def restore(face):  # the aligned crop must show the image content around the landmarks
        seen.append(face)
        return np.broadcast_to(magenta, face.shape)

    pasted, faces = restore_in_image(helper, image, restore, landmarks=[landmarks])
    assert faces == 1 and pasted.shape == image.shape and pasted.dtype == np.uint8
    assert np.array_equal(pasted[outside], image[outside])  # the rest of the image untouched
    assert np.abs(pasted[centre].astype(int) - [255, 0, 255]).max() <= 2  # the face replaced
    # the crop is the face square scaled up 4x: its mean colour is the square's mean colour
    assert seen[0].shape == (512, 512, 3)
    square = image[top:int(top + side), left:int(left + side)].astype(float) / 255
    assert np.allclose(seen[0].mean(axis=(0, 1)), square.mean(axis=(0, 1)), atol=0.01)


def test_codeformer_refused_without_licence(tmp_path, face_env):
    Image.fromarray(face_like(64)).save(tmp_path / "face.png")
    result = cli(tmp_path, face_env, "model=CodeFormer", "task.mode=aligned", "task.input=face.png")
    assert result.returncode == 2, result.stderr
    assert "S-Lab License 1.0" in result.stderr
    assert "manager.accept_licences=[CodeFormer]" in result.stderr
    assert not (tmp_path / "run" / "face_restored.png").exists()


def test_codeformer_download_alone_is_licence_gated(tmp_path):
    """download() is refused before anything is fetched, as load() is; accepting the licence
    lets it past that gate (to the next one here: offline mode, since the shipped entry is
    hashed and so needs no allow_unhashed)."""
    from mlplatform_managers import LicenceError, ModelManager, UnsafeModelError

    from mlplatform.api import MLPlatformError

    models = tmp_path / "models"
    with pytest.raises(LicenceError, match=r"pass manager\.accept_licences=\[CodeFormer\]"):
        ModelManager(models, offline=True).download("CodeFormer")
    assert not models.exists()
    accepted = ModelManager(models, offline=True, accept_licences=["CodeFormer"])
    with pytest.raises(MLPlatformError, match="offline mode is on") as refused:
        accepted.download("CodeFormer")
    assert not isinstance(refused.value, (LicenceError, UnsafeModelError))


@pytest.mark.skipif(not HAS_FACEXLIB, reason="facexlib (extra faces)")
def test_full_mode_batch(tmp_path, face_env):
    """A file of photos: each restored with the model and facexlib's helper loaded once, named
    after its input, and restored.json listing them in file order."""
    make_face_detector_weights(tmp_path / "detector", find_faces=True)
    rng = np.random.default_rng(5)
    paths = []
    for index, size in enumerate([(96, 128), (80, 80)]):
        paths.append(tmp_path / f"photo{index}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "photos.txt").write_text("\n".join(map(str, paths)) + "\n")
    result = cli(tmp_path, face_env, "model.name=tiny_gfpgan", "task.batch_file=photos.txt",
                 "task.detector_dir=detector", "task.only_center_face=true")
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "run" / "restored.json").read_text())
    assert [(r["item"], r["input"], r["faces"]) for r in records] == [
        (0, str(paths[0]), 1), (1, str(paths[1]), 1)]
    for record, path in zip(records, paths, strict=True):
        assert record["output"] == str(tmp_path / "run" / f"{path.stem}_restored.png")
        with Image.open(record["output"]) as out, Image.open(path) as source:
            assert out.size == source.size
        assert png_parameters(record["output"])["input"] == str(path)
    assert not list((tmp_path / "run").glob("*.progress.jsonl"))


@pytest.mark.skipif(not HAS_EXTRA_ARCHES, reason="spandrel_extra_arches (extra codeformer)")
def test_codeformer_aligned_with_licence_accepted(tmp_path, face_env):
    """Aligned mode through the CLI (GFPGAN goes through the CLI in full mode above)."""
    Image.fromarray(face_like(300, seed=2)).save(tmp_path / "face.png")  # resized to 512 px
    result = cli(tmp_path, face_env, "model.name=tiny_codeformer", "task.mode=aligned",
                 "task.input=face.png", "task.fidelity=0.7", "task.output=cf.png",
                 "manager.accept_licences=[tiny_codeformer]")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "run" / "cf.png") as image:
        assert image.mode == "RGB" and image.size == (512, 512)
        array = np.asarray(image).astype(float)
    assert array.min() >= 0 and array.max() <= 255 and array.std() > 1
    params = png_parameters(tmp_path / "run" / "cf.png")
    assert params["model_type"] == "codeformer" and params["fidelity"] == 0.7
    assert params["mode"] == "aligned" and params["faces"] == 1
    summary = json.loads((tmp_path / "run" / "infer_result.json").read_text())
    assert summary["result"]["faces"] == 1


@pytest.mark.parametrize("case", ["unhashed_detector", "detector_missing_offline",
                                  "detector_dir_empty", "fidelity_for_gfpgan"])
def test_face_restore_bad_input_exits_2(tmp_path, face_env, case):
    """Refused before the face model is loaded: the detector entry is fetched through the
    catalog's safety rules (unhashed: opt-in; offline: no download), never by facexlib itself."""
    Image.fromarray(face_like(64)).save(tmp_path / "photo.png")
    (tmp_path / "empty").mkdir()
    args, message = {
        # the MobileNet detector's weights have no known sha256; the ResNet-50 one is hashed
        "unhashed_detector": (["task.detector=facexlib_retinaface_mobilenet"],
                              "manager.allow_unhashed=[facexlib_retinaface_mobilenet]"),
        "detector_missing_offline": ([], "offline mode is on"),
        "detector_dir_empty": (["task.detector_dir=empty"],
                               "detection_Resnet50_Final.pth, parsing_parsenet.pth are missing"),
        "fidelity_for_gfpgan": (["task.fidelity=0.5", "task.mode=aligned"],
                                "task.fidelity applies to codeformer models"),
    }[case]
    result = cli(tmp_path, face_env, "model.name=tiny_gfpgan", "task.input=photo.png", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run" / "photo_restored.png").exists()
