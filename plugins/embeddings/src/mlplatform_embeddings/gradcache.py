"""GradCache (Gao et al. 2021): a contrastive batch larger than activation memory allows.

1. Encode the batch chunk by chunk without autograd, remembering each chunk's RNG state.
2. Compute the whole loss (InfoNCE over the full in-batch pool, Matryoshka, distillation against
   the teacher's scores) on those embeddings as leaves, and backpropagate it to them (and to the
   loss's own parameters, such as a learnable temperature).
3. Re-encode each chunk with autograd, the RNG state restored (the same dropout masks), and
   backpropagate the cached embedding gradients through it.

Peak activation memory is one chunk's instead of the whole batch's; the price is a second
forward pass. With dropout off the parameter gradients equal an uncached step's (tested)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


class RandomState:
    """The CPU (and current CUDA device's) RNG state at creation; `with state:` replays it and
    then puts back the state that was current on entry."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None
        self.device = device
        self._saved: tuple | None = None

    def __enter__(self) -> RandomState:
        self._saved = (torch.get_rng_state(),
                       torch.cuda.get_rng_state(self.device) if self.cuda else None)
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        cpu, cuda = self._saved
        torch.set_rng_state(cpu)
        if self.cuda:
            torch.cuda.set_rng_state(cuda, self.device)


def grad_cache_backward(module: Any, contrastive: Any, batch: dict[str, Any], accelerator: Any) -> torch.Tensor:
    """One micro-step's backward with cached embedding gradients; returns the (detached) loss.

    `module` is the prepared (possibly DDP-wrapped, autocast) ContrastiveModel, called with
    `chunk=` to encode one chunk; `contrastive` is the unwrapped one, whose `contrastive_loss`
    turns all embeddings into the loss."""
    chunks = batch["texts"]
    device = chunks.restore.device
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks.inputs:
            states.append(RandomState(device))
            outputs.append(module(chunk=chunk))
    cached = torch.cat(outputs)[chunks.restore].detach().float().requires_grad_()
    loss = contrastive.contrastive_loss(
        cached, batch["rows"], batch["query_ids"], batch["doc_ids"], batch.get("teacher_embeddings"),
    )
    accelerator.backward(loss)  # scaled for accumulation / fp16 like an uncached step
    sorted_grads = cached.grad[chunks.order]
    start, last = 0, len(chunks.inputs) - 1
    for index, (chunk, state) in enumerate(zip(chunks.inputs, states, strict=True)):
        # DDP reduces gradients once, after the last chunk
        sync = accelerator.no_sync(module) if index < last else nullcontext()
        with sync, state:
            output = module(chunk=chunk)  # texts (input_ids or open_clip's text) or images
            rows = output.shape[0]
            torch.autograd.backward(output, sorted_grads[start:start + rows].to(output.dtype))
        start += rows
    if accelerator.num_processes > 1 and accelerator.sync_gradients:
        # the loss's parameters took no part in the chunks' forward passes, so DDP leaves their
        # gradients local: average them here (a no-op on equal values, as with gathered negatives)
        for parameter in contrastive.loss.parameters():
            if parameter.grad is not None:
                parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")
    return loss.detach()
