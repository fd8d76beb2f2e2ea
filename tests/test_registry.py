import pytest

from mlplatform.errors import PluginError, UnknownNameError
from mlplatform.registry import Registrar, Registry


def _registry_with(*items):
    registry = Registry()
    for source, kind, name in items:
        registrar = Registrar(source)
        registrar.add(kind, name, object())
        registrar.commit(registry)
    return registry


def test_duplicate_names_are_refused_naming_both_distributions():
    registry = _registry_with(("dist-a", "builder", "vae_decode"))
    registrar = Registrar("dist-b")
    registrar.add("builder", "vae_decode", object())
    with pytest.raises(PluginError) as err:
        registrar.commit(registry)
    assert "dist-a" in str(err.value) and "dist-b" in str(err.value)
    assert registry.entry("builder", "vae_decode").source == "dist-a"


def test_a_failed_commit_registers_nothing_of_that_plugin():
    registry = _registry_with(("dist-a", "builder", "taken"))
    registrar = Registrar("dist-b")
    registrar.add("builder", "fresh", object())
    registrar.add("builder", "taken", object())
    with pytest.raises(PluginError):
        registrar.commit(registry)
    assert registry.names("builder") == ["taken"]


def test_unknown_name_lists_known_names_and_the_closest_match():
    registry = _registry_with(
        ("d", "builder", "autoencoder_kl_decode"), ("d", "builder", "unet2d_condition")
    )
    with pytest.raises(UnknownNameError) as err:
        registry.get("builder", "autoencoder_kl_decod")
    message = str(err.value)
    assert "autoencoder_kl_decode, unet2d_condition" in message
    assert "did you mean 'autoencoder_kl_decode'" in message
    assert "job=plugins" in message


def test_unknown_name_of_an_empty_kind_says_no_plugin_provides_it():
    with pytest.raises(UnknownNameError, match="no installed plugin provides any trainers"):
        Registry().get("trainer", "contrastive")
