"""The extension point: a plugin adds a model family and a loss through the registry (kinds
embedding_model and embedding_loss, as the built-ins are registered) and trains with them through
the real CLI; unknown names are answered with the closest registered one."""

from __future__ import annotations

import json

import pytest
import torch
from mlplatform_embeddings import LOSS_KIND, MODEL_KIND, build_loss, build_model

from mlplatform.api import ConfigError, UnknownNameError, get_registry
from mlplatform.testing import make_distribution, run_cli

PLUGIN = '''
import torch
from mlplatform.api import hookimpl
from mlplatform_embeddings import EmbeddingModelFamily, TextEncoder


def build_cls8(cfg):
    """A plugin's family: a transformers encoder, CLS pooling, an 8-wide projection head."""
    from transformers import AutoModel, AutoTokenizer

    backbone = AutoModel.from_pretrained(cfg.model_name)
    return TextEncoder(backbone, AutoTokenizer.from_pretrained(cfg.model_name), pooling="cls",
                       projection=torch.nn.Linear(backbone.config.hidden_size, 8),
                       max_seq_length=cfg.max_seq_length, source=cfg.model_name)


class HingeLoss(torch.nn.Module):
    """A plugin's loss: margin between the positive and the hardest other candidate, times a
    learnable weight (a loss parameter the optimizer must reach)."""

    def __init__(self, margin):
        super().__init__()
        self.margin = margin
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, query, positive, negatives=None, *, query_ids=None, doc_ids=None, negative_ids=None):
        candidates = positive if negatives is None else torch.cat([positive, negatives])
        scores = query @ candidates.T
        rows = torch.arange(query.shape[0])
        own = scores[rows, rows]
        others = scores.masked_fill(torch.eye(*scores.shape, dtype=torch.bool), -2.0).max(1).values
        return self.weight * torch.relu(self.margin - own + others).mean()


@hookimpl
def register_components(registry):
    registry.add("embedding_model", "cls8", EmbeddingModelFamily(build=build_cls8),
                 description="a throw-away plugin's model family")
    registry.add("embedding_loss", "hinge", lambda cfg: HingeLoss(**cfg.options),
                 description="a throw-away plugin's loss")
'''


@pytest.mark.slow
def test_a_plugin_adds_a_model_family_and_a_loss_and_trains_with_them(tiny_bert, tmp_path, make_pairs, jsonl):
    from safetensors.torch import load_file

    site = make_distribution(tmp_path / "site", "tiny-embed-ext", {"tiny_embed_ext": PLUGIN},
                             {"tiny_embed_ext": "tiny_embed_ext"})
    data = jsonl(tmp_path / "train.jsonl", make_pairs(16))
    result = run_cli(
        "job=train", "trainer=embedding", f"trainer.model.model_name={tiny_bert}",
        "trainer.model.family=cls8", "trainer.loss.name=hinge", "+trainer.loss.options.margin=0.5",
        f"trainer.data.train_file={data}", "trainer.batch_size=8", "trainer.max_steps=2",
        "trainer.eval_before=false", "trainer.log_every=1", "trainer.optim.learning_rate=0.01",
        "device=cpu", "hydra.run.dir=run", cwd=tmp_path, extra_path=[site], timeout=300,
        env={"MLPLATFORM_STRICT_PLUGINS": "1", "MLPLATFORM_LOAD_PLUGINS": "embeddings,tiny_embed_ext",
             "OMP_NUM_THREADS": "1"},  # tiny models: one thread is faster on 2 cores
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["temperature"] for h in metrics["history"]] == [None] * 2  # not InfoNCE
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert (manifest["embedding_dim"], manifest["pooling"]) == (8, "cls")  # the plugin's family
    state = load_file(run / "checkpoints" / "step-000002" / "model.safetensors")
    assert float(state["loss.weight"]) != 1.0  # the plugin loss's parameter was trained


def test_built_ins_are_registered_like_a_plugins_and_unknown_names_suggest_the_closest(tiny_bert):
    registry = get_registry()
    assert {"transformers", "clip", "open_clip", "towers"} <= set(registry.names(MODEL_KIND))
    assert "infonce" in registry.names(LOSS_KIND)
    assert registry.entry(LOSS_KIND, "infonce").source == registry.entry(MODEL_KIND, "clip").source
    with pytest.raises(UnknownNameError, match="did you mean 'infonce'"):
        build_loss("infonse")
    with pytest.raises(UnknownNameError, match="did you mean 'open_clip'"):
        build_model({"model_name": str(tiny_bert), "family": "open-clip"})
    explicit = build_model({"model_name": str(tiny_bert), "family": "transformers"})
    assert explicit.family == "transformers" and explicit.embedding_dim == 64
    with pytest.raises(ConfigError, match="not options of infonce"):
        build_loss("infonce", options={"margin": 1.0})
    assert isinstance(build_loss("infonce", matryoshka_dims=[8]).base, torch.nn.Module)
