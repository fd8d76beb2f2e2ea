"""Run by test_embeddings_distributed.py, under torchrun (2 processes, gloo) or alone: one
backward of the contrastive module on this process's share of a fixed batch; rank 0 saves every
parameter's gradient. Not a test module itself."""

import json
import sys

import torch
from accelerate import Accelerator
from mlplatform_embeddings import InfoNCELoss, Pair, build_model
from mlplatform_embeddings.training import ContrastiveModel, PairCollator
from safetensors.torch import save_file

model_dir, pairs_file, out = sys.argv[1:4]
pairs = [Pair(p["query"], p["positive"], tuple(p["negatives"])) for p in json.load(open(pairs_file))]
accelerator = Accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
torch.manual_seed(0)
encoder = build_model({"model_name": model_dir, "projection_dim": 16})
module = ContrastiveModel(encoder, InfoNCELoss(0.1, learnable_temperature=True),
                          cross_device_negatives=True)
# dropout off but train mode (DDP does not synchronise gradients of a module in eval mode)
for layer in module.modules():
    if isinstance(layer, torch.nn.Dropout):
        layer.p = 0.0
    if hasattr(layer, "dropout_prob"):  # attention dropout passed to the attention kernel
        layer.dropout_prob = 0.0
module.train()
share = len(pairs) // world
batch = PairCollator(encoder)(pairs[rank * share:(rank + 1) * share])
prepared = accelerator.prepare(module)
loss = prepared(**batch)
accelerator.backward(loss)
if accelerator.is_main_process:
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    grads["loss"] = loss.detach().reshape(1)
    save_file(grads, out)
accelerator.wait_for_everyone()
