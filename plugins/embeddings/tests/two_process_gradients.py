"""Run by test_embeddings_distributed.py, under torchrun (2 processes, gloo) or alone: on this
process's share of a fixed batch, one backward of the contrastive module (OUT), one with KL
distillation from a teacher (OUT.teacher), and one GradCache backward with the teacher (chunks of
3 texts, OUT.teacher.gradcache); rank 0 saves every parameter's gradient of each. Not a test
module itself."""

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from mlplatform_embeddings import InfoNCELoss, Pair, build_model
from mlplatform_embeddings.gradcache import grad_cache_backward
from mlplatform_embeddings.training import ContrastiveModel, PairCollator, teacher_embeddings
from safetensors.torch import save_file

model_dir, pairs_file, out = sys.argv[1:4]
pairs = [Pair(p["query"], p["positive"], tuple(p["negatives"])) for p in json.load(open(pairs_file))]
# GradCache's chunk passes leave the loss's parameters out of DDP's graph (as the trainer sets)
accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
rank, world = accelerator.process_index, accelerator.num_processes
torch.manual_seed(0)
encoder = build_model({"model_name": model_dir, "projection_dim": 16})
module = ContrastiveModel(encoder, InfoNCELoss(0.1, learnable_temperature=True),
                          {"kind": "kl", "weight": 0.5, "temperature": 0.1}, cross_device_negatives=True)
teacher = build_model({"model_name": model_dir}).eval()  # mean pooling, no head: other targets
# dropout off but train mode (DDP does not synchronise gradients of a module in eval mode)
for layer in module.modules():
    if isinstance(layer, torch.nn.Dropout):
        layer.p = 0.0
    if hasattr(layer, "dropout_prob"):  # attention dropout passed to the attention kernel
        layer.dropout_prob = 0.0
module.train()
share = pairs[rank * (len(pairs) // world):(rank + 1) * (len(pairs) // world)]
prepared = accelerator.prepare(module)


def save(loss, path):
    if accelerator.is_main_process:
        grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
        grads["loss"] = loss.detach().reshape(1)
        save_file(grads, path)
    module.zero_grad(set_to_none=True)
    accelerator.wait_for_everyone()


batch = PairCollator(encoder, keep_texts=True)(share)
targets = teacher_embeddings(teacher, batch, "cpu")
del batch["query_texts"], batch["document_texts"]
loss = prepared(**batch)
accelerator.backward(loss)
save(loss, out)
loss = prepared(**batch, teacher_embeddings=targets)
accelerator.backward(loss)
save(loss, out + ".teacher")
chunked = PairCollator(encoder, max_rows=3)(share)
assert len(chunked["texts"].inputs) >= 4  # 12 texts per process in chunks of at most 3
save(grad_cache_backward(prepared, module, {**chunked, "teacher_embeddings": targets}, accelerator),
     out + ".teacher.gradcache")
