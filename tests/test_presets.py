"""The checkout's ready-made presets (conf/experiment): each composes into a runnable job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def test_the_checkout_ships_presets():
    assert "sd15_vae_decode" in PRESETS and "sd15_vae_decode_random" in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_to_registered_components(cli, preset):
    pytest.importorskip("mlplatform_compile")  # the presets build with the compile plugin
    from mlplatform.plugins import get_registry

    result = cli(f"experiment={preset}", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    registry = get_registry()
    assert cfg["job"]["name"] in registry.names("job")
    if cfg["job"]["name"] == "build":
        assert cfg["builder"]["name"] in registry.names("builder")
        assert cfg["backend"]["name"] in registry.names("backend")
        assert cfg["builder"]["hf_hub"] and "???" not in result.stdout


def test_command_line_overrides_beat_the_preset(cli):
    pytest.importorskip("mlplatform_compile")
    result = cli("experiment=sd15_vae_decode", "builder.label=mine", "dtype=bfloat16", "--cfg", "job")
    cfg = yaml.safe_load(result.stdout)
    assert cfg["builder"]["label"] == "mine" and cfg["dtype"] == "bfloat16"
    assert cfg["builder"]["model_kwargs"]["subfolder"] == "vae"  # the rest of the preset stays


def test_unknown_preset_names_the_known_ones(cli):
    result = cli("experiment=sd15_vae_decod")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown experiment 'sd15_vae_decod'" in result.stderr
    assert "did you mean experiment=sd15_vae_decode?" in result.stderr
