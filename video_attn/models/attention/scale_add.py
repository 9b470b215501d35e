"""``identity + x * scale`` for the gates' ``gate_add`` (the residual block's gate-then-add in one pass)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def can_overwrite(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether a gate may write a result computed from ``x`` and ``others`` into ``x``'s storage.

    Only when autograd is off (nothing saved ``x`` for a backward pass) and the result keeps ``x``'s dtype
    (under autocast a bfloat16 gate times a float32 ``x`` stays float32; the reverse would not).
    """
    return not torch.is_grad_enabled() and all(
        torch.promote_types(x.dtype, o.dtype) == x.dtype for o in others
    )


class _ScaleAdd(torch.autograd.Function):
    """``identity + x * scale`` with ``scale`` broadcast over x (a gate: (B, C, 1, 1) or (B, 1, H, W)).

    Autograd's ``addcmul`` backward materialises ``x * value`` (a block-sized copy, even for value 1)
    before multiplying by the gradient; this backward forms ``grad * x`` once and reduces it.
    """

    @staticmethod
    def forward(ctx, identity: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, scale)
        return torch.addcmul(identity, x, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, scale = ctx.saved_tensors
        grad_x = grad * scale if ctx.needs_input_grad[1] else None
        grad_scale = (grad * x).sum_to_size(scale.shape) if ctx.needs_input_grad[2] else None
        return grad, grad_x, grad_scale


def scale_add(identity: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``identity + x * scale`` with one ``addcmul``.

    ``x`` is the residual branch's own temporary, so a gate may use it as scratch under no_grad: when
    :func:`can_overwrite` allows it the result is written into ``x`` (as torchvision's ``out += identity``),
    which spares allocating (and, on CPU, page-faulting) a fresh block-sized tensor per block at inference.
    """
    if torch.is_grad_enabled():
        return _ScaleAdd.apply(identity, x, scale)
    if can_overwrite(x, identity, scale):
        return torch.addcmul(identity, x, scale, out=x)
    return torch.addcmul(identity, x, scale)
