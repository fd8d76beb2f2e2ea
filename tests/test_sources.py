import json

import pytest

from mlplatform.errors import ModelSourceError
from mlplatform.sources import resolve_model_source


def _model_dir(root, subfolder=None):
    target = root / subfolder if subfolder else root
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    return root


def test_local_directory_and_subfolder(tmp_path):
    root = _model_dir(tmp_path / "sd", "vae")
    assert resolve_model_source(root, subfolder="vae") == root / "vae"


def test_missing_subfolder_names_where_it_looked(tmp_path):
    root = _model_dir(tmp_path / "sd")
    with pytest.raises(ModelSourceError, match="no subfolder 'unet'") as err:
        resolve_model_source(root, subfolder="unet")
    assert str(root / "unet") in str(err.value)


def test_directory_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model_source(tmp_path / "empty")


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_source(str(tmp_path / "nowhere" / "deeper"))


def test_hub_id_offline_missing_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelSourceError) as err:
        resolve_model_source("someorg/not-downloaded", subfolder="vae")
    message = str(err.value)
    assert "someorg/not-downloaded" in message and "HF_HUB_OFFLINE=1" in message
    assert "subfolder 'vae'" in message


def test_hub_id_offline_found_in_the_cache(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "cache"
    repo = cache / "models--someorg--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    _model_dir(snapshot, "vae")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_model_source("someorg/tiny", subfolder="vae")
    assert resolved == snapshot / "vae"
