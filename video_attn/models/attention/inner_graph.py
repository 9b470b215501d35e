"""Small autograd graphs inside a custom autograd node (CBAM's and Shuffle Attention's training nodes).

A gate's node writes out its block-sized work by hand but keeps autograd for the small maps in between (an
MLP on pooled descriptors, a 7x7 conv, a per-channel affine): they are built in forward on detached leaves
under :func:`inner_graph` and differentiated in backward with :func:`inner_grad`, which returns the
parameter gradients through the node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def inner_graph() -> Iterator[None]:
    """Autograd on for a small inner graph of a custom node, its tensors saved as they are: under
    non-reentrant checkpointing they would otherwise be recomputed by the inner ``torch.autograd.grad`` in
    backward (a second recomputation of the whole checkpointed block)."""
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
        yield


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def inner_grad(
    output: torch.Tensor,
    grad_output: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
) -> list[torch.Tensor | None]:
    """Gradients of a small forward graph for its leaves ``inputs`` and its ``params`` (None for a
    parameter that does not require grad), given the gradient of its ``output``."""
    wanted = [*inputs, *(p for p in params if p.requires_grad)]
    if not wanted:  # every parameter frozen and no leaf input
        return [None] * len(params)
    found = iter(torch.autograd.grad(output, wanted, grad_output.to(output.dtype)))
    return [next(found) if t.requires_grad else None for t in (*inputs, *params)]
