"""task=upscale with 8- and 16-bit PNGs: 16-bit inputs keep their precision through the model and
come out 16-bit (RGB, RGBA, grey), alpha kept; 8-bit inputs can be written as 16-bit; a batch file
of images upscaled with one model load."""

from __future__ import annotations

import numpy as np
import pytest
from mlplatform_managers import ModelManager
from mlplatform_managers.images import load_array, png_bit_depth, png_parameters, save_array
from mlplatform_managers.schemas import UpscaleTaskConfig
from mlplatform_managers.tasks import TaskContext
from mlplatform_managers.tasks.upscale import UpscaleTask

from mlplatform.api import ConfigError


@pytest.fixture(scope="module")
def upscale(tiny_models, tmp_path_factory):
    manager = ModelManager(tiny_models[0], catalog_dirs=[tiny_models[1]])
    out = tmp_path_factory.mktemp("upscaled")
    ctx = TaskContext(manager=manager, model="tiny_esrgan", device="cpu", dtype="float32",
                      seed=0, output_dir=out)

    def run(path, **options):
        source = None if path is None else str(path)
        return UpscaleTask().run(ctx, UpscaleTaskConfig(input=source, tile=0, **options))

    yield run
    manager.unload_all()


def test_16_bit_rgba_stays_16_bit_with_its_alpha(upscale, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.random((12, 10, 4), dtype=np.float32)
    pixels[..., 3] = 1.0
    pixels[:4, :4, 3] = 0.0  # a transparent corner
    save_array(pixels, tmp_path / "deep.png", {}, bit_depth=16)
    assert png_bit_depth(tmp_path / "deep.png") == 16
    result = upscale(tmp_path / "deep.png")
    out, depth, grey, alpha = load_array(result["output"])
    assert (depth, grey, alpha, out.shape) == (16, False, True, (48, 40, 4))
    assert png_parameters(result["output"])["bit_depth"] == 16
    assert out[:12, :12, 3].max() < 0.05 and out[24:, 24:, 3].min() > 0.95
    levels = np.round(out[..., :3] * 65535).astype(np.int64)
    assert np.mean(levels % 257 != 0) > 0.5  # finer than 8-bit steps: the 16 bits were kept
    # the same image through the 8-bit path agrees to within 8-bit quantisation
    save_array(pixels, tmp_path / "shallow.png", {}, bit_depth=8)
    shallow, depth8, _, _ = load_array(upscale(tmp_path / "shallow.png")["output"])
    assert depth8 == 8 and np.abs(shallow[..., :3] - out[..., :3]).max() < 0.05


def test_16_bit_grey_and_8_bit_promoted(upscale, tmp_path):
    grey = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10, 1)
    save_array(grey, tmp_path / "grey16.png", {}, bit_depth=16)
    out, depth, is_grey, alpha = load_array(upscale(tmp_path / "grey16.png")["output"])
    assert (depth, is_grey, alpha, out.shape) == (16, True, False, (32, 40, 1))
    save_array(np.dstack([grey] * 3), tmp_path / "rgb8.png", {}, bit_depth=8)
    out, depth, is_grey, _ = load_array(upscale(tmp_path / "rgb8.png", bit_depth=16)["output"])
    assert (depth, is_grey, out.shape) == (16, False, (32, 40, 3))
    with pytest.raises(ConfigError, match="task.bit_depth is 12"):
        upscale(tmp_path / "rgb8.png", bit_depth=12)


def test_batch_file_of_images(upscale, tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for index, depth in enumerate((8, 16, 8)):
        paths.append(tmp_path / f"img{index}.png")
        save_array(rng.random((6, 5, 3), dtype=np.float32), paths[-1], {}, bit_depth=depth)
    (tmp_path / "images.txt").write_text("\n".join(str(p) for p in paths) + "\n\n")
    result = upscale(None, batch_file=str(tmp_path / "images.txt"))
    assert result["items"] == 3 and result["processes"] == 1
    assert [r["item"] for r in result["images"]] == [0, 1, 2]
    for record, depth in zip(result["images"], (8, 16, 8), strict=True):
        out, got_depth, _, _ = load_array(record["output"])
        assert out.shape == (24, 20, 3) and got_depth == depth
    with pytest.raises(ConfigError, match="replaces task.input"):
        upscale(paths[0], batch_file=str(tmp_path / "images.txt"))
    with pytest.raises(ConfigError, match="needs an image"):
        upscale(None)
